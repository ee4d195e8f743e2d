"""FID/KID on synthetic features (closed forms, invariants) and the reference-statistics file."""

import dataclasses
import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from fdm.errors import FdmError
from fdm.metrics.features import FeatureExtractor
from fdm.metrics.scores import fid, kid, metric_name, metrics_record, score, write_metrics
from fdm.metrics.stats import ReferenceStats, check_matches, feature_moments, load_stats, save_stats


@pytest.fixture(autouse=True)
def one_blas_thread():
    """KID's many small products run faster on one BLAS thread than on a shared 2-core machine's two."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def gaussian_features(n=2000, dim=8, seed=0):
    """n draws of one correlated Gaussian in ``dim`` dimensions (the seed changes the draws only)."""
    mixing = np.random.default_rng(dim).normal(size=(dim, dim))
    return np.random.default_rng(seed).normal(size=(n, dim)) @ mixing


def stats_of(features, extractor="digitsnet", mode="native", sha="a" * 64, shape=(16, 16, 1)):
    mu, sigma = feature_moments(features)
    return ReferenceStats(
        mu, sigma, features.astype(np.float32), extractor, mode, sha, "x.zip", "b" * 64, shape
    )


def test_moments_are_float64_mean_and_unbiased_covariance():
    features = gaussian_features(n=50).astype(np.float32)
    mu, sigma = feature_moments(features)
    assert mu.dtype == sigma.dtype == np.float64
    centred = features.astype(np.float64) - features.mean(axis=0, dtype=np.float64)
    np.testing.assert_allclose(sigma, centred.T @ centred / (len(features) - 1), rtol=1e-10)


def test_fid_of_a_set_against_itself_is_zero():
    features = gaussian_features()
    mu, sigma = feature_moments(features)
    assert abs(fid(features, mu, sigma)) < 1e-6 * np.trace(sigma)


def test_fid_of_a_shifted_set_is_the_squared_shift():
    # Same covariance, means apart by c: FID = |c|^2 exactly.
    features = gaussian_features()
    mu, sigma = feature_moments(features)
    shift = np.linspace(-1.0, 2.0, features.shape[1])
    assert fid(features + shift, mu, sigma) == pytest.approx(shift @ shift, rel=1e-6)


def test_fid_of_a_scaled_set_matches_the_closed_form():
    # Sigma_2 = a^2 Sigma: Tr(Sigma + a^2 Sigma - 2 a Sigma) = (1 - a)^2 Tr(Sigma).
    features = gaussian_features()
    mu, sigma = feature_moments(features)
    a = 1.7
    scaled = (features - mu) * a + mu
    assert fid(scaled, mu, sigma) == pytest.approx((1 - a) ** 2 * np.trace(sigma), rel=1e-6)


def test_fid_refuses_features_of_another_dimension():
    mu, sigma = feature_moments(gaussian_features(dim=8))
    with pytest.raises(FdmError, match="dimension"):
        fid(gaussian_features(dim=4), mu, sigma)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    ref = gaussian_features(n=200, seed=1)
    same = kid(gaussian_features(n=200, seed=2), ref)
    shifted = kid(gaussian_features(n=200, seed=2) + 3.0, ref)  # A shift of about one standard deviation.
    assert abs(same) < 0.05 * shifted
    assert shifted > 0


def test_kid_of_two_equal_sized_sets_is_their_unbiased_mmd():
    """KID is the unbiased squared MMD with the kernel k(a, b) = (a.b / d + 1)^3 (Binkowski et al. 2018,
    arXiv 1801.01401): averaged over subsets, but subsets of two sets' full size hold every feature, so
    here it is the MMD of the whole sets, written out by hand."""

    def kernel(a, b):
        return (a @ b.T / a.shape[1] + 1) ** 3

    def mmd(x, y):
        n = len(x)
        within = kernel(x, x).sum() - np.trace(kernel(x, x)) + kernel(y, y).sum() - np.trace(kernel(y, y))
        return within / (n * (n - 1)) - 2 * kernel(x, y).mean()

    # float32 features, as extractors give them: the distance is still computed in float64.
    x = gaussian_features(n=60, seed=1).astype(np.float32)
    y = (gaussian_features(n=60, seed=2) + 0.5).astype(np.float32)
    expected = mmd(x.astype(np.float64), y.astype(np.float64))
    assert kid(x, y) == pytest.approx(expected, rel=1e-9)
    assert kid(y, x) == pytest.approx(expected, rel=1e-9)
    assert kid(x[:2], y[:2]) == pytest.approx(
        mmd(x[:2].astype(np.float64), y[:2].astype(np.float64)), rel=1e-9
    )


def test_kid_is_repeatable_and_leaves_numpy_global_state_alone():
    # Sets of different sizes: each subset of the larger one is a random draw, so repeating needs the seed.
    a, b = gaussian_features(n=40, seed=1), gaussian_features(n=80, seed=2)
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    assert kid(a, b) == kid(a, b)
    assert kid(a, b, seed=1) != kid(a, b)
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    with pytest.raises(FdmError, match="^KID needs at least 2 images in each set$"):
        kid(a[:1], b)


def test_metric_names_carry_extractor_and_mode():
    assert metric_name("fid", "inception", "legacy_tensorflow") == "fid_inception_legacy_tensorflow"
    assert metric_name("kid", "inception", "clean") == "kid_inception_clean"
    assert metric_name("fid", "digitsnet", "native") == "fid_digitsnet"
    features = gaussian_features(n=100)
    assert set(score(features, stats_of(features))) == {"fid_digitsnet", "kid_digitsnet"}


def test_metrics_record_says_what_each_feature_space_was_measured_with(tmp_path):
    """metrics.json: the values by metric name at the top, the sample count, then the extractor, mode,
    network digest and reference of one feature space at the top, or of several under scoring.<space>."""
    features = gaussian_features(n=20)
    digits = stats_of(features)
    clean = stats_of(features, extractor="inception", mode="clean", sha="c" * 64, shape=(32, 32, 3))
    legacy = stats_of(features, extractor="inception", mode="legacy_tensorflow", sha="c" * 64)
    measured = {
        "extractor": "digitsnet",
        "mode": "native",
        "extractor_sha256": "a" * 64,
        "reference": {"dataset": "x.zip", "dataset_sha256": "b" * 64, "count": 20},
    }
    path = tmp_path / "eval" / "metrics.json"
    path.parent.mkdir()
    record = write_metrics(path, {"fid_digitsnet": 1.5}, [digits], 20, sampler="heun", nfe=35)
    assert record == {"fid_digitsnet": 1.5, "num_samples": 20, **measured, "sampler": "heun", "nfe": 35}
    assert json.loads(path.read_text()) == record and path.read_text().endswith("}\n")
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]
    both = metrics_record({"fid_inception_clean": 2.0}, [clean, legacy], 7)
    assert set(both) == {"fid_inception_clean", "num_samples", "scoring"}
    assert both["scoring"]["inception_clean"] == {**measured, "extractor": "inception", "mode": "clean",
                                                  "extractor_sha256": "c" * 64}  # fmt: skip
    assert both["scoring"]["inception_legacy_tensorflow"]["mode"] == "legacy_tensorflow"


def test_stats_file_round_trip(tmp_path):
    stats = stats_of(gaussian_features(n=100))
    save_stats(tmp_path / "ref.npz", stats)
    loaded = load_stats(tmp_path / "ref.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    np.testing.assert_array_equal(loaded.features, stats.features)
    assert (loaded.extractor, loaded.mode, loaded.image_shape, loaded.count) == (
        "digitsnet",
        "native",
        (16, 16, 1),
        100,
    )
    assert [p.name for p in tmp_path.iterdir()] == ["ref.npz"]  # No temporary file left behind.


def test_load_stats_refuses_other_files(tmp_path):
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    (tmp_path / "text.npz").write_text("not numpy")
    for name in ("other.npz", "text.npz", "missing.npz"):
        with pytest.raises(FdmError, match="ref-stats"):
            load_stats(tmp_path / name)


def test_check_matches_refuses_another_extractor_mode_network_or_image_shape():
    stats = stats_of(gaussian_features(n=10), extractor="inception", mode="clean")

    def extractor(name="inception", mode="clean", sha="a" * 64):
        return FeatureExtractor(name, mode, sha, embed=lambda images: images)

    check_matches(stats, extractor(), (16, 16, 1))
    with pytest.raises(FdmError, match="inception/clean, not the requested inception/legacy_tensorflow"):
        check_matches(stats, extractor(mode="legacy_tensorflow"))
    with pytest.raises(FdmError, match="not the requested digitsnet/native"):
        check_matches(stats, extractor("digitsnet", "native"))
    with pytest.raises(FdmError, match="different inception network file"):
        check_matches(stats, extractor(sha="c" * 64))
    with pytest.raises(FdmError, match="32x32x3"):
        check_matches(stats, extractor(), (32, 32, 3))
    # The whole lines, where the messages name the file and the images.
    stats = dataclasses.replace(stats, extractor_sha256="a" * 12 + "b" * 52, dataset="set.zip")
    with pytest.raises(FdmError) as refused:
        check_matches(stats, extractor(sha="a" * 12 + "c" * 52), source="the stats file")
    assert str(refused.value) == (
        "the stats file were computed with a different inception network file "
        f"(sha256 {'a' * 12}, now {'a' * 12}); recompute them"
    )
    with pytest.raises(FdmError) as refused:
        check_matches(stats, extractor(sha="a" * 12 + "b" * 52), (32, 32, 3))
    assert str(refused.value) == (
        "images are 32x32x3 (HxWxC) but reference statistics were made from 16x16x1 images of set.zip"
    )


@pytest.mark.parametrize("shape", [(2, 4), (3, 1)])
def test_moments_need_two_vectors_of_any_dimension(shape):
    mu, sigma = feature_moments(np.arange(np.prod(shape), dtype=np.float64).reshape(shape))
    assert mu.shape == (shape[1],)


@pytest.mark.parametrize("shape", [(1, 4), (4,), (2, 2, 2)])
def test_moments_refuse_fewer_than_two_vectors_or_another_rank(shape):
    with pytest.raises(FdmError) as refused:
        feature_moments(np.zeros(shape))
    assert str(refused.value) == f"need at least 2 feature vectors [N, D] for a covariance, got {list(shape)}"


@pytest.mark.parametrize(
    "arrays",
    [
        {"sigma": np.eye(2)},  # sigma of another dimension than mu
        {"features": np.zeros(6, np.float32)},  # features not [N, D]
        {"features": np.zeros((6, 2), np.float32)},  # features of another dimension
    ],
)
def test_load_stats_refuses_each_inconsistent_shape_alone(tmp_path, arrays):
    good = stats_of(gaussian_features(n=6, dim=3))
    path = tmp_path / "ref.npz"
    save_stats(path, dataclasses.replace(good, **arrays))
    with pytest.raises(FdmError) as refused:
        load_stats(path)
    message = str(refused.value)
    assert message.startswith(f"{path} holds inconsistent shapes: mu (3,), sigma ")


def test_the_digits_network_is_identified_by_its_weights_not_its_file_bytes(tmp_path):
    """TorchScript files carry a random serialization id; metrics must not depend on it."""
    import json

    import torch

    from fdm.metrics.featnet import DigitsNet, info_path, save_featnet
    from fdm.metrics.features import build_extractor

    torch.manual_seed(0)
    net = DigitsNet(img_resolution=8).eval()
    save_featnet(tmp_path / "a.pt", net, {})
    save_featnet(tmp_path / "b.pt", net, {})
    a = build_extractor("digitsnet", featnet=tmp_path / "a.pt")
    b = build_extractor("digitsnet", featnet=tmp_path / "b.pt")
    assert a.weights_sha256 == b.weights_sha256
    assert json.loads(info_path(tmp_path / "a.pt").read_text())["weights_sha256"] == a.weights_sha256
    with torch.no_grad():
        next(net.parameters()).add_(1e-3)
    save_featnet(tmp_path / "c.pt", net, {})
    assert build_extractor("digitsnet", featnet=tmp_path / "c.pt").weights_sha256 != a.weights_sha256


def test_dataset_stats_are_the_moments_of_every_images_features_in_order(tmp_path):
    """`dataset_stats` over a prepared archive of 10 images, 3 at a time: the features are the
    extractor's of each image in archive order (none dropped, none flipped), mu and sigma their float64
    mean and unbiased covariance, and the file records the dataset, its digest and the image shape."""
    import hashlib

    from fdm.data.archive import Item, write_archive
    from fdm.metrics.stats import dataset_stats

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(10, 4, 4, 1), dtype=np.uint8)
    data = tmp_path / "set.zip"
    write_archive(data, (Item(str(i), image) for i, image in enumerate(images)))

    def corner_and_mean(batch):  # a feature map whose values we can compute by hand
        return np.stack([batch[:, 0, 0, 0], batch.reshape(len(batch), -1).mean(axis=1), batch[:, 3, 1, 0]], 1)

    extractor = FeatureExtractor("hand", "native", "c" * 64, corner_and_mean)
    stats = dataset_stats(data, tmp_path / "set.stats.npz", extractor, batch_size=3)
    expected = corner_and_mean(images).astype(np.float32)
    np.testing.assert_array_equal(stats.features, expected)
    np.testing.assert_allclose(stats.mu, expected.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(expected.astype(np.float64).T, ddof=1), rtol=1e-12)
    assert (stats.extractor, stats.mode, stats.extractor_sha256) == ("hand", "native", "c" * 64)
    assert (
        stats.dataset == "set.zip" and stats.dataset_sha256 == hashlib.sha256(data.read_bytes()).hexdigest()
    )
    assert stats.image_shape == (4, 4, 1) and stats.count == 10
    with np.load(tmp_path / "set.stats.npz") as saved:
        assert saved["count"] == 10 and saved["count"].dtype == np.int64
        assert saved["image_shape"].dtype == np.int64
    loaded = load_stats(tmp_path / "set.stats.npz")
    np.testing.assert_array_equal(loaded.features, stats.features)
    assert (loaded.dataset, loaded.image_shape) == ("set.zip", (4, 4, 1))


def test_metrics_json_is_byte_identical_whatever_order_its_values_come_in(tmp_path):
    """metrics.json stays byte-identical between runs and between Snakemake and DVC (docs/tracking.md):
    its keys are written sorted, so the order in which values and provenance are passed cannot show."""
    ref = stats_of(gaussian_features(n=20))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_metrics(
        a, {"kid_digitsnet": 0.1, "fid_digitsnet": 1.5}, [ref], 20, sampler="heun", nfe=35, seeds="0-19"
    )
    write_metrics(
        b, {"fid_digitsnet": 1.5, "kid_digitsnet": 0.1}, [ref], 20, seeds="0-19", nfe=35, sampler="heun"
    )
    assert a.read_bytes() == b.read_bytes()
    assert list(json.loads(a.read_text())) == sorted(json.loads(a.read_text()))


class RecordingExtractor(FeatureExtractor):
    """A hand-computable feature map (corner pixel, mean) that records the size of every batch it gets."""

    def __init__(self):
        self.batches = []

        def corner_and_mean(batch):
            self.batches.append(len(batch))
            return np.stack([batch[:, 0, 0, 0], batch.reshape(len(batch), -1).mean(axis=1)], 1)

        super().__init__("hand", "native", "c" * 64, corner_and_mean)


def test_embed_computes_batch_size_images_at_a_time_and_shows_progress_only_when_asked(capfd):
    """`embed`: 256 images per call by default, ``batch_size`` when given, features in image order; a
    progress bar ("<extractor> features", in batches) on stderr only with ``progress=True``."""
    from fdm.metrics.stats import embed

    images = np.random.default_rng(0).integers(0, 256, size=(257, 4, 4, 1), dtype=np.uint8)
    extractor = RecordingExtractor()
    features = embed(extractor, images)
    assert extractor.batches == [256, 1]
    np.testing.assert_array_equal(features[:, 0], images[:, 0, 0, 0])
    assert capfd.readouterr().err == ""
    extractor.batches.clear()
    np.testing.assert_array_equal(embed(extractor, images, batch_size=100, progress=True), features)
    assert extractor.batches == [100, 100, 57]
    err = capfd.readouterr().err
    assert "hand features" in err and "batch/s" in err, err


def test_dataset_stats_embed_every_image_in_batches_with_progress_and_ignore_labels(tmp_path, capfd):
    """`dataset_stats` passes its batch size (default 256) to the extractor and shows its progress; as
    EDM's ``fid.py ref`` (arXiv 2206.00364, code: its dataset's default ``use_labels=False``), labels play
    no part: an archive whose dataset.json labels are unusable still gives its statistics."""
    import zipfile

    from fdm.data.archive import Item, write_archive
    from fdm.data.reader import ImageDataset
    from fdm.metrics.stats import dataset_stats

    images = np.random.default_rng(4).integers(0, 256, size=(257, 4, 4, 1), dtype=np.uint8)
    data = tmp_path / "set.zip"
    write_archive(tmp_path / "clean.zip", (Item(str(i), image) for i, image in enumerate(images)))
    with zipfile.ZipFile(tmp_path / "clean.zip") as clean, zipfile.ZipFile(data, "w") as archive:
        for name in clean.namelist():
            if name != "dataset.json":
                archive.writestr(name, clean.read(name))
        archive.writestr("dataset.json", json.dumps({"labels": [["not-an-image.png", 0]]}))
    with pytest.raises(FdmError, match="not an image in the archive"):
        ImageDataset(data)  # what reading its labels would say
    extractor = RecordingExtractor()
    stats = dataset_stats(data, tmp_path / "a.npz", extractor)
    assert extractor.batches == [256, 1] and stats.count == 257
    assert "hand features" in capfd.readouterr().err
    extractor.batches.clear()
    again = dataset_stats(data, tmp_path / "b.npz", extractor, batch_size=100)
    assert extractor.batches == [100, 100, 57]
    np.testing.assert_array_equal(again.features, stats.features)
