"""`fdm report`: records, tables from synthetic records whose answers are known, and the command end to end.

The speedup definition itself, on curves: tests/test_report_speedup.py.
"""

import csv
import dataclasses
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from scipy import stats as scipy_stats

from fdm import names, paper_results, paths
from fdm.config import load_params
from fdm.errors import FdmError
from fdm.metrics.stats import ReferenceStats, feature_moments, save_stats
from fdm.report.cli import report
from fdm.report.figures import line_styles
from fdm.report.paired import paired, welch
from fdm.report.records import Record, Stat, aggregate, by_seed, read_records, t_interval
from fdm.report.tables import (
    fid_vs_mimg_markdown,
    fid_vs_mimg_rows,
    fid_vs_nfe_rows,
    speedup_markdown,
    speedup_rows,
    to_csv,
)
from fdm.report.write import write_report

ROOT = Path(__file__).resolve().parents[1]
PAIRS = names.BASELINE  # each FDM variant and its baseline


def records(dataset, variant, values: dict, sampler="heun", nfe=15, kimg=None, seed=0) -> list[Record]:
    """Records of one curve: ``values`` maps kimg (or NFE when ``kimg`` is given) to the metric."""
    return [
        Record(
            dataset,
            variant,
            seed,
            kimg if kimg is not None else x,
            sampler,
            x if kimg is not None else nfe,
            y,
        )
        for x, y in values.items()
    ]


def log_log(x0, y0, x1, y1, target):
    """Where the straight line through (log x0, log y0) and (log x1, log y1) is at log(target)."""
    return x0 * (x1 / x0) ** (math.log(y0 / target) / math.log(y0 / y1))


def by_variant(rows, measure):
    return {(r["sampler"], r["variant"]): r for r in rows if r["measure"] == measure}


def test_t_interval_closed_forms():
    """Student t quantiles with closed forms: 1 dof is Cauchy, tan(pi (p - 1/2)); 2 dof, (2p-1)/sqrt(2p(1-p))."""
    p = 0.975
    two = t_interval([1.0, 3.0])  # mean 2, s = sqrt(2), s / sqrt(n) = 1
    assert (two.mean, two.n) == (2.0, 2) and two.std == pytest.approx(math.sqrt(2.0))
    half = math.tan(math.pi * (p - 0.5))
    assert (two.ci_low, two.ci_high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    three = t_interval([1.0, 2.0, 3.0])  # mean 2, s = 1
    half = (2 * p - 1) / math.sqrt(2 * p * (1 - p)) / math.sqrt(3)
    assert (three.ci_low, three.ci_high) == (pytest.approx(2.0 - half), pytest.approx(2.0 + half))
    flat = t_interval([4.0, 4.0, 4.0])
    assert flat.ci_low == flat.ci_high == 4.0
    one = t_interval([5.0])
    assert (one.mean, one.std, one.ci_low, one.ci_high, one.n) == (5.0, None, None, None, 1)


def test_aggregate_over_training_seeds():
    stats = aggregate(records("d", "edm", {10: 1.0}, seed=0) + records("d", "edm", {10: 3.0}, seed=1))
    stat = stats[("d", "edm", 10, "heun", 15)]
    assert (stat.mean, stat.n) == (2.0, 2)
    assert stat.std == pytest.approx(math.sqrt(2.0))
    assert stat.ci_low == pytest.approx(2.0 - math.tan(0.475 * math.pi))
    assert aggregate(records("d", "edm", {10: 1.0}))[("d", "edm", 10, "heun", 15)].std is None


def test_training_speedup_known_answers():
    recs = (
        records("d", "edm", {10: 5.0, 20: 3.0, 40: 2.0})
        + records("d", "fdm_edm", {10: 4.0, 20: 2.0, 40: 1.5})  # reaches 2.0 at exactly half the kimg
        + records("d", "vp", {10: 4.0, 40: 2.0})
        + records("d", "fdm_vp", {10: 3.0, 30: 1.0})  # crosses 2.0 halfway between 10 and 30: at 20
        + records("d", "ve", {10: 9.0, 40: 4.0})
        + records("d", "fdm_ve", {10: 9.5, 40: 4.5})  # never
    )
    rows = by_variant(speedup_rows(recs, "d", PAIRS, ("heun", 15), 40), "kimg")
    edm, vp, ve = rows["heun", "fdm_edm"], rows["heun", "fdm_vp"], rows["heun", "fdm_ve"]
    assert (edm["baseline_at"], edm["target"], edm["baseline_reached"], edm["reached"]) == (40, 2.0, 40, 20)
    assert (edm["speedup"], edm["status"], edm["tolerance"]) == (2.0, "reached", 0.0)  # one seed: no SE
    # 3 -> 1 between 10 and 30 crosses 2 at 10 * 3^(ln 1.5 / ln 3) = 15 in log-log, at 20 on a straight line
    assert (
        vp["reached"] == pytest.approx(15.0) and vp["first"] == 30 and vp["speedup"] == pytest.approx(40 / 15)
    )
    assert (vp["strict_reached"], vp["strict_speedup"], vp["strict_status"]) == (
        pytest.approx(20.0), pytest.approx(2.0), "reached"
    )  # fmt: skip
    assert (ve["reached"], ve["speedup"], ve["status"], ve["strict_status"]) == (
        None,
        None,
        "not reached",
        "not reached",
    )
    for row in (edm, vp, ve):  # one training seed: no interval
        assert (row["ci_low"], row["ci_high"], row["not_reached_share"], row["n_baseline"]) == (
            None,
            None,
            None,
            1,
        )


def test_a_baseline_that_gets_there_early_is_credited_with_its_own_first_crossing():
    """Non-monotone baseline: it first reaches its final 2.0 at 30 kimg (between 20 and 40), not at 50."""
    recs = records("d", "edm", {10: 4.0, 20: 3.0, 40: 1.0, 50: 2.0}) + records(
        "d", "fdm_edm", {10: 3.5, 20: 2.0, 50: 1.0}
    )
    row = by_variant(speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 50), "kimg")["heun", "fdm_edm"]
    assert (row["baseline_at"], row["target"]) == (50, 2.0)
    assert row["baseline_reached"] == pytest.approx(log_log(20, 3.0, 40, 1.0, 2.0))
    assert row["speedup"] == pytest.approx(log_log(20, 3.0, 40, 1.0, 2.0) / 20.0)
    assert (row["strict_baseline_reached"], row["strict_speedup"]) == (
        pytest.approx(30.0),
        pytest.approx(1.5),
    )


def test_sampling_speedup_known_answers():
    recs = (
        records(
            "d", "edm", {5: 3.0, 9: 2.5, 15: 2.4, 25: 2.4}, kimg=40
        )  # 2.4 at its largest NFE, first at 15
        + records("d", "fdm_edm", {5: 2.6, 9: 2.3, 15: 2.2}, kimg=40)  # crosses 2.4 at 5 + 0.2/0.3 * 4
        + records("d", "fdm_edm", {5: 1.0}, kimg=20)  # not the final snapshot: ignored
        + records("d", "edm", {5: 2.0}, kimg=40, sampler="euler")
        + records("d", "fdm_edm", {5: 1.5, 9: 1.0}, kimg=40, sampler="euler")  # at its first point
    )
    rows = speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)
    row = by_variant(rows, "nfe")["heun", "fdm_edm"]
    crossing = log_log(5, 2.6, 9, 2.3, 2.4)
    assert (row["baseline_at"], row["target"], row["baseline_reached"], row["first"]) == (25, 2.4, 15, 9)
    assert row["reached"] == pytest.approx(crossing)
    assert row["speedup"] == pytest.approx(15 / crossing)
    assert row["strict_reached"] == pytest.approx(5 + (2.6 - 2.4) / (2.6 - 2.3) * 4)
    euler = by_variant(rows, "nfe")["euler", "fdm_edm"]
    assert (euler["reached"], euler["speedup"], euler["status"]) == (5, 1.0, "reached at first point")
    assert [r["measure"] for r in rows] == [
        "kimg",
        "nfe",
        "nfe",
    ]  # no vp/ve pairs: variants not in the profile


def linear_seeds(variant, slope, offsets, floor=-math.inf, dataset="d"):
    """One record curve per seed: value = max(10 - slope * kimg, floor) + offset, kimg 5, 10, ..., 40."""
    recs = []
    for seed, offset in enumerate(offsets):
        curve = {k: max(10.0 - slope * k, floor) + offset for k in range(5, 45, 5)}
        recs += records(dataset, variant, curve, seed=seed)
    return recs


def power_seeds(variant, scale, factors, dataset="d"):
    """One record curve per seed: value = scale * factor / kimg at kimg 5, 10, ..., 40 (a power law)."""
    return [
        r
        for seed, factor in enumerate(factors)
        for r in records(dataset, variant, {k: scale * factor / k for k in range(5, 45, 5)}, seed=seed)
    ]


def test_bootstrap_interval_of_paired_seeds_within_closed_form_bounds():
    """Baseline 80 a_i / k, FDM 40 b_i / k on seed i: a resample with mean factors a, b reaches the threshold
    (target 2 a plus its SE, whatever that is) at 40 a / (a + SE) and 20 b / (a + SE): ratio 2 a / b. With
    b = a on every seed each paired resample gives exactly 2; with b a permutation of a, the ratio lies
    between 2 min(a_i / b_i) and 2 max(a_i / b_i)."""
    factors = (0.9, 1.0, 1.1)
    recs = power_seeds("edm", 80.0, factors) + power_seeds("fdm_edm", 40.0, factors)
    row = speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)[0]
    se = 2 * float(np.std(factors, ddof=1)) / math.sqrt(3)
    assert (row["target"], row["tolerance"], row["speedup"]) == (
        pytest.approx(2.0),
        pytest.approx(se),
        pytest.approx(2.0),
    )
    assert row["reached"] == pytest.approx(20 / (1 + se / 2))
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(2.0), pytest.approx(2.0))  # paired: a point
    assert (row["not_reached_share"], row["n_baseline"], row["n_fdm"], row["pairs"]) == (0.0, 3, 3, 3)
    swapped = (1.1, 0.9, 1.0)
    recs = power_seeds("edm", 80.0, factors) + power_seeds("fdm_edm", 40.0, swapped)
    row = speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)[0]
    ratios = [2 * a / b for a, b in zip(factors, swapped, strict=True)]
    assert row["speedup"] == pytest.approx(2.0)
    assert min(ratios) - 1e-9 <= row["ci_low"] < 2.0 < row["ci_high"] <= max(ratios) + 1e-9


def test_bootstrap_share_of_resamples_that_never_reach_the_target():
    """One FDM seed of three is stuck at 5: a resample with two or three copies of it ends above the target
    (mean >= 10/3 > 2 at 40 kimg), which happens with probability 3 (1/3)^2 (2/3) + (1/3)^3 = 7/27."""
    recs = linear_seeds("edm", 0.2, (0.0, 0.0, 0.0))
    recs += linear_seeds("fdm_edm", 0.4, (0.0, 0.0), floor=0.0)
    recs += records("d", "fdm_edm", {k: 5.0 for k in range(5, 45, 5)}, seed=2)
    row = speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)[0]
    assert row["status"] == "reached" and row["speedup"] is not None  # the mean over all three gets there
    assert row["not_reached_share"] == pytest.approx(7 / 27, abs=0.04)
    assert row["ci_low"] is None and row["ci_high"] is not None  # the lower end is "not reached"
    assert "[not reached, " in speedup_markdown([row], "d", "fid", False)


def test_missing_baseline_and_missing_runs():
    recs = records("d", "fdm_edm", {10: 1.0}) + records("d", "vp", {10: 1.0})
    rows = by_variant(speedup_rows(recs, "d", PAIRS, ("heun", 15), 10), "kimg")
    assert rows["heun", "fdm_edm"]["status"] == "no baseline runs"
    assert rows["heun", "fdm_vp"]["status"] == "no runs"


def test_paper_speedups_from_the_paper_tables():
    """paper.md 3.3: AFHQv2 EDM-FDM passes EDM's 200-Mimg FID between 50 and 100 Mimg; NFE 25 beats 79."""
    mimg, nfe = paper_results.fid_vs_kimg("afhqv2"), paper_results.fid_vs_nfe("afhqv2")
    rows = speedup_rows([], "afhqv2", PAIRS, ("heun", 79), 200000, mimg, nfe)
    training = by_variant(rows, "kimg")["heun", "fdm_edm"]
    crossing = log_log(50000, 2.73, 100000, 2.05, 2.37)
    assert training["paper_reached"] == pytest.approx(crossing)
    assert training["paper_speedup"] == pytest.approx(200000 / crossing)
    assert training["status"] == "no baseline runs"  # ours: nothing recorded
    for sampler in ("heun", "dpmpp_3s"):
        for variant in ("fdm_edm", "fdm_vp", "fdm_ve"):
            row = by_variant(rows, "nfe")[sampler, variant]
            assert row["paper_speedup"] == pytest.approx(79 / 25)
            assert row["paper_status"] == "reached at first point"  # 3.2x is a lower bound
    assert paper_results.fid_vs_kimg("cifar10")["fdm_ve"][50000] == 10.01
    assert paper_results.fid_vs_nfe("afhqv2")["dpmpp_3s"]["ve"][79] == 58.91
    assert paper_results.fid_vs_kimg("digits") == {} and paper_results.fid_vs_nfe("cifar10") == {}


def test_tables_put_the_paper_beside_ours():
    stats = aggregate(records("afhqv2", "edm", {50000: 3.0}, nfe=79))
    paper = paper_results.fid_vs_kimg("afhqv2")
    rows = fid_vs_mimg_rows(stats, "afhqv2", ("edm",), "heun", 79, paper)
    assert [(r["kimg"], r["mean"], r["paper"]) for r in rows] == [
        (50000, 3.0, 2.62),
        (100000, None, 2.57),
        (150000, None, 2.44),
        (200000, None, 2.37),
    ]
    assert to_csv(rows[:1], ("variant", "kimg", "mimg", "seeds", "mean", "std", "paper")) == (
        "variant,kimg,mimg,seeds,mean,std,paper\nedm,50000,50.000000,1,3.000000,,2.620000\n"
    )
    nfe_rows = fid_vs_nfe_rows(
        aggregate(records("afhqv2", "edm", {25: 3.1}, kimg=200000)), "afhqv2", ("edm",), 200000
    )
    assert [(r["sampler"], r["nfe"], r["mean"], r["paper"]) for r in nfe_rows] == [("heun", 25, 3.1, None)]


def test_markdown_one_line_per_mimg_one_column_per_variant_that_ran():
    recs = records("d", "edm", {10: 3.0, 20: 2.0}, seed=0) + records("d", "edm", {10: 5.0, 20: 2.0}, seed=1)
    variants = ("edm", "ve", "fdm_edm")  # ve has no runs: no column; fdm_edm has no run at 20: empty cell
    rows = fid_vs_mimg_rows(aggregate(recs + records("d", "fdm_edm", {10: 1.5})), "d", variants, "heun", 15)
    half = math.tan(0.475 * math.pi)  # t_{0.975, 1} * sqrt(2) / sqrt(2)
    assert f"{4 - half:.2f}, {4 + half:.2f}" == "-8.71, 16.71"
    assert fid_vs_mimg_markdown(rows, "d", variants, "fid") == (
        "# d: fid vs training Mimg\n\n"
        "Sampler heun at NFE 15. Mean over n=1/2 training seeds [95% Student-t confidence interval of the "
        "mean]; no interval where n=1; – : not run.\n\n"
        "| Mimg | edm | fdm_edm |\n|---|---|---|\n"
        "| 0.01 | 4.00 [-8.71, 16.71] | 1.50 |\n"
        "| 0.02 | 2.00 [2.00, 2.00] |  |\n"
    )


# On disk and through the command ------------------------------------------------------------------------------


def write_stats(root: Path, params, count: int = 500, dim: int = 8) -> None:
    """Reference statistics for every dataset and feature space of the profile at their `fdm.paths`
    places under ``root`` (the report computes the metric's floor from them): Gaussian features."""
    rng = np.random.default_rng(0)
    for dataset in params.datasets:
        for extractor, mode in params.eval.spaces():
            features = rng.standard_normal((count, dim)).astype(np.float32)
            mu, sigma = feature_moments(features)
            ref = ReferenceStats(
                mu, sigma, features, extractor, mode, "0" * 64, f"{dataset}.zip", "0" * 64, (4, 4, 1)
            )
            path = root / paths.stats_file(params.name, dataset, extractor, mode)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_stats(path, ref)


@pytest.fixture
def in_project(tmp_path, monkeypatch):
    """Run in ``tmp_path`` as in a project's root: the report finds the reference statistics there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_runs(runs: Path, params, value) -> None:
    """A metrics.json for every evaluation the profile asks for, with value(dataset, variant, seed, kimg, sampler, nfe)."""
    for dataset, variant, seed in params.models():
        for kimg, sampler, nfe in [
            (k, s, n) for k in params.snapshot_kimg for s, n in params.points(dataset, k)
        ]:
            path = Path(paths.metrics(paths.run(dataset, variant, seed, root=str(runs)), kimg, sampler, nfe))
            path.parent.mkdir(parents=True, exist_ok=True)
            fid = value(dataset, variant, seed, kimg, sampler, nfe)
            metrics = {name: fid for name in params.eval.metric_names()}
            path.write_text(
                json.dumps({**metrics, "num_samples": 300, "sampler": sampler, "nfe": nfe, "kimg": kimg})
            )


def smoke_value(dataset, variant, seed, kimg, sampler, nfe):
    """FDM reaches the baseline's final value (at 20 kimg) at 10 kimg: all samplers alike."""
    return (4.0 if kimg == 10 else 2.0) + (-2.0 if variant.startswith("fdm_") else 0.0) + 2.0 / nfe


def run_report(tmp_path, params_path, value) -> Path:
    """Synthetic runs and reference statistics for the profile, ``fdm report`` twice (byte-identical
    files), the report folder. Runs in ``tmp_path`` (the fixture ``in_project``)."""
    write_runs(tmp_path / "runs", load_params(params_path), value)
    write_stats(tmp_path, load_params(params_path))
    args = [
        "--params",
        str(params_path),
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "reports"),
    ]
    result = CliRunner().invoke(report, args)
    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / "digits"
    names = sorted(p.name for p in folder.iterdir())
    expected = [f"{s}.{e}" for s in ("fid_vs_mimg", "fid_vs_nfe", "speedup") for e in ("csv", "md", "png")]
    expected += ["claims.csv", "claims.md", "paired.csv", "paired.md", "per_seed.csv", "floor.csv"]
    assert names == sorted([*expected, "versions.json"])
    first = {name: (folder / name).read_bytes() for name in names}
    assert CliRunner().invoke(report, args).exit_code == 0
    assert first == {name: (folder / name).read_bytes() for name in names}  # byte-identical rerun, PNGs too
    for name in names:
        if name.endswith(".png"):
            with Image.open(folder / name) as image:
                image.load()  # decodes
                assert image.width > 400 and image.height > 300
    return folder


def csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_report_command_end_to_end_one_seed(in_project):
    tmp_path = in_project
    folder = run_report(tmp_path, ROOT / "params.yaml", smoke_value)
    speedup = (folder / "speedup.csv").read_text().splitlines()
    # FDM is at the target at its first snapshot: credited with it, a lower bound; one seed: no interval.
    assert speedup[1] == (
        "kimg,fdm_edm,edm,heun,20,2.133333,0.000000,20,10,10,2.000000,,,,1,1,1,reached at first point,"
        "20,10,2.000000,reached at first point,,,"
    )
    mimg = (folder / "fid_vs_mimg.md").read_text()
    assert "| 0.01 | 4.13 | 2.13 |" in mimg and "(paper" not in mimg and "(n=1)" in mimg
    assert (
        "| ≥ 2.00x | n=1 seed pairs: none (needs 2) | 0.02 / 0.01 | ≥ 2.00x | 1/1 |"
        in (folder / "speedup.md").read_text()
    )
    assert csv_rows(folder / "fid_vs_mimg.csv")[0]["ci_low"] == ""


STUDY_OFFSETS = (-0.25, 0.0, 0.25)  # per training seed, exact in binary: the seed means are exact
STUDY_NFE = {  # final snapshot; the baseline's largest-NFE value is reached by FDM at NFE 11 (heun), 8 (dpmpp)
    ("heun", False): {7: 5.0, 11: 4.0, 15: 3.0, 19: 2.5, 35: 2.0},
    ("heun", True): {7: 3.0, 11: 2.0, 15: 1.8, 19: 1.5, 35: 1.4},
    ("dpmpp_3s", False): {5: 5.0, 8: 4.0, 10: 3.0, 15: 2.5, 25: 2.0},
    ("dpmpp_3s", True): {5: 3.0, 8: 2.0, 10: 1.2, 15: 1.1, 25: 1.0},
}


def study_value(dataset, variant, seed, kimg, sampler, nfe):
    """Training at heun-19: baseline 0.5 + 80/kimg, FDM 0.5 + 40/kimg, so FDM reaches the baseline's
    final 2.5 at exactly half the kimg (20 of 40); the final snapshot follows STUDY_NFE."""
    fdm = variant.startswith("fdm_")
    base = STUDY_NFE[sampler, fdm][nfe] if kimg == 40 else 0.5 + (40.0 if fdm else 80.0) / kimg
    return base + STUDY_OFFSETS[seed]


def test_report_study_profile_three_seeds(in_project, figures_seen):
    tmp_path = in_project
    folder = run_report(tmp_path, ROOT / "config" / "study.yaml", study_value)
    assert_golden("study", folder.parent, figures_seen)
    rows = {(r["measure"], r["sampler"], r["variant"]): r for r in csv_rows(folder / "speedup.csv")}
    # Robust rule: the target plus its SE over the offsets (-0.25, 0, 0.25), 0.25 / sqrt(3), crossed in
    # log-log; strict: the target itself on straight lines (2x, 35/11 and 25/8 by construction).
    se = 0.25 / math.sqrt(3)
    expected = {
        ("kimg", "heun"): (
            log_log(30, 0.5 + 80 / 30, 40, 2.5, 2.5 + se) / log_log(10, 4.5, 20, 2.5, 2.5 + se),
            2.0,
        ),
        ("nfe", "heun"): (log_log(19, 2.5, 35, 2.0, 2.0 + se) / log_log(7, 3.0, 11, 2.0, 2.0 + se), 35 / 11),
        ("nfe", "dpmpp_3s"): (
            log_log(15, 2.5, 25, 2.0, 2.0 + se) / log_log(5, 3.0, 8, 2.0, 2.0 + se),
            25 / 8,
        ),
    }
    assert len(rows) == 3 * len(expected)
    for (measure, sampler, variant), row in rows.items():
        ratio, strict = expected[measure, sampler]
        assert float(row["speedup"]) == pytest.approx(ratio, abs=1e-6), (measure, sampler, variant)
        assert float(row["strict_speedup"]) == pytest.approx(strict, abs=1e-6), (measure, sampler, variant)
        assert float(row["tolerance"]) == pytest.approx(se, abs=1e-6)
        assert float(row["ci_low"]) <= ratio <= float(row["ci_high"])
        assert (row["n_baseline"], row["n_fdm"], row["pairs"], row["status"]) == ("3", "3", "3", "reached")
    # t interval of {x - 0.25, x, x + 0.25}: s = 0.25, half width t_{0.975, 2} * 0.25 / sqrt(3) = 0.62
    mimg = (folder / "fid_vs_mimg.md").read_text()
    assert "| 0.04 | 2.50 [1.88, 3.12] | 1.50 [0.879, 2.12] |" in mimg and "n=3 training seeds" in mimg
    [row] = [r for r in csv_rows(folder / "fid_vs_mimg.csv") if (r["variant"], r["kimg"]) == ("edm", "40")]
    assert (row["n"], row["mean"]) == ("3", "2.500000")
    assert float(row["ci_high"]) - 2.5 == pytest.approx(
        0.25 * (0.95 / math.sqrt(2 * 0.975 * 0.025)) / math.sqrt(3)
    )
    nfe = csv_rows(folder / "fid_vs_nfe.csv")
    assert {r["sampler"] for r in nfe} == {"heun", "dpmpp_3s"} and len(nfe) == 6 * 10
    # The seed offsets are shared by a variant and its baseline: every paired difference has no spread.
    paired = {(r["variant"], r["kimg"], r["sampler"], r["nfe"]): r for r in csv_rows(folder / "paired.csv")}
    assert len(paired) == 3 * (4 + 9)  # 4 snapshots at heun 19, 9 other points of the final snapshot
    at_20 = paired["fdm_vp", "20", "heun", "19"]  # (0.5 + 40/20) - (0.5 + 80/20) = -2
    assert (float(at_20["difference"]), float(at_20["ci_low"]), float(at_20["ci_high"])) == (-2.0, -2.0, -2.0)
    assert (at_20["pairs"], at_20["worse"]) == ("3", "0")
    assert float(at_20["welch_ci_low"]) < -2.5  # Welch ignores the pairing: the offsets' spread enters
    assert "| 0.02 | -2.00 [-2.00, -2.00], worse in 0 of 3 |" in (folder / "paired.md").read_text()
    # Claims: FDM at N/2 equals the baseline at N (difference 0) at N = 20 and 40; the paper's sampling
    # form pairs NFE 7 with 19 and 11 with 35 (heun), 5 with 15, 8 and 10 with 25 (dpmpp_3s).
    claims = csv_rows(folder / "claims.csv")
    training = [(r["variant"], r["baseline_kimg"], r["variant_kimg"], float(r["difference"]), r["role"])
                for r in claims if r["form"] == "training"]  # fmt: skip
    assert training == [
        (v, n, str(int(n) // 2), 0.0, "exploratory")
        for v in ("fdm_edm", "fdm_vp", "fdm_ve")
        for n in ("20", "40")
    ]
    sampling = {(r["sampler"], r["variant_nfe"], r["baseline_nfe"]): float(r["difference"])
                for r in claims if r["form"] == "sampling_paper" and r["variant"] == "fdm_edm"}  # fmt: skip
    assert sampling == {("heun", "7", "19"): 0.5, ("heun", "11", "35"): 0.0, ("dpmpp_3s", "5", "15"): 0.5,
                        ("dpmpp_3s", "8", "25"): 0.0, ("dpmpp_3s", "10", "25"): pytest.approx(-0.8)}  # fmt: skip
    converged = [(r["sampler"], r["variant_nfe"], r["baseline_nfe"], r["ratio"]) for r in claims
                 if r["form"] == "sampling_converged" and r["variant"] == "fdm_edm"]  # fmt: skip
    assert converged == [("dpmpp_3s", "25", "25", "1.000000"), ("heun", "35", "35", "1.000000")]
    text = (folder / "claims.md").read_text()
    assert (
        "No comparison is pre-registered (report.confirm)" in text and "Floor: fid_digitsnet of 400" in text
    )
    per_seed = csv_rows(folder / "per_seed.csv")
    assert len(per_seed) == 6 * 3 * (3 + 10) and per_seed[0] == {
        "variant": "edm", "train_seed": "0", "kimg": "10", "sampler": "heun", "nfe": "19", "metric": "fid_digitsnet",
        "value": f"{0.5 + 80 / 10 - 0.25:.6f}",
    }  # fmt: skip


def test_paper_profile_our_numbers_equal_to_the_paper_give_the_paper_speedups(in_project, figures_seen):
    tmp_path = in_project
    params = load_params(ROOT / "config" / "paper.yaml")
    params = dataclasses.replace(
        params, datasets={"afhqv2": params.datasets["afhqv2"]}
    )  # the one with both tables

    def value(dataset, variant, seed, kimg, sampler, nfe):
        by_nfe = paper_results.fid_vs_nfe(dataset).get(sampler, {}).get(variant, {})
        by_kimg = paper_results.fid_vs_kimg(dataset)[variant]
        if kimg == params.duration_kimg and nfe in by_nfe:
            return by_nfe[nfe]
        return (
            by_kimg[kimg]
            if (sampler, nfe) == (params.eval.main[dataset].sampler, params.eval.main[dataset].nfe)
            else 99.0
        )

    write_runs(tmp_path / "runs", params, value)
    # The released checkpoints, evaluated on the final snapshot's plan: the paper's value + 0.25 where
    # it has one (so the pretrained table's differences are +0.25), 99 elsewhere.
    kimg = params.duration_kimg
    for entry in (e for e in params.pretrained if e.dataset == "afhqv2"):
        run_dir = paths.pretrained("afhqv2", entry.formulation, root=str(tmp_path / "runs"))
        for sampler, nfe in params.points("afhqv2", kimg):
            path = Path(paths.metrics(run_dir, kimg, sampler, nfe))
            path.parent.mkdir(parents=True, exist_ok=True)
            fid = value("afhqv2", entry.formulation, 0, kimg, sampler, nfe)
            fid = fid + 0.25 if fid != 99.0 else fid
            metrics = {name: fid for name in params.eval.metric_names()}
            path.write_text(
                json.dumps({**metrics, "num_samples": 50000, "sampler": sampler, "nfe": nfe, "kimg": kimg})
            )
    write_stats(tmp_path, params)
    write_report(params, tmp_path / "runs", tmp_path / "reports")
    assert_golden("paper", tmp_path / "reports", figures_seen)
    pretrained = csv_rows(tmp_path / "reports" / "afhqv2" / "pretrained.csv")
    assert len(pretrained) == 6 * len(params.points("afhqv2", kimg))
    assert {r["difference"] for r in pretrained if r["paper"]} == {"0.250000"}
    lines = (tmp_path / "reports" / "afhqv2" / "speedup.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        assert (row["reached"], row["speedup"]) == (row["paper_reached"], row["paper_speedup"]), line
    assert len(lines) == 1 + 3 + 2 * 3  # training, then sampling for dpmpp_3s and heun
    table = (tmp_path / "reports" / "afhqv2" / "fid_vs_mimg.md").read_text()
    assert "| 50 | 2.62 (2.62) | 2.73 (2.73) |" in table
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["afhqv2"]


def test_bad_records_are_clear_errors(tmp_path):
    params = load_params(ROOT / "params.yaml")
    runs = tmp_path / "runs"
    path = runs / "digits" / "edm" / "s0" / "eval" / "10" / "heun-15" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(FdmError, match=r"heun-15/metrics.json: not readable JSON"):
        read_records(params, runs, "fid_digitsnet")
    path.write_text(json.dumps({"kid_digitsnet": 0.1}))
    with pytest.raises(FdmError, match=r"metrics.json: no 'fid_digitsnet' \(found: kid_digitsnet\)"):
        read_records(params, runs, "fid_digitsnet")
    path.write_text(json.dumps({"fid_digitsnet": float("nan")}))
    with pytest.raises(FdmError, match=r"metrics.json: fid_digitsnet is nan, not a finite number"):
        read_records(params, runs, "fid_digitsnet")
    path.write_text(json.dumps({"fid_digitsnet": 2.0}))
    # Only the profile's points are read: another dataset, or a point the profile does not evaluate, is not.
    for extra in (
        "mnist/edm/s0/eval/10/heun-15",
        "digits/edm/s0/eval/10/heun-7",
        "digits/edm/s1/eval/20/heun-7",
    ):
        (runs / extra).mkdir(parents=True)
        (runs / extra / "metrics.json").write_text(json.dumps({"fid_digitsnet": 1.0}))
    (record,) = read_records(params, runs, "fid_digitsnet")
    assert (record.dataset, record.variant, record.kimg, record.sampler, record.nfe) == (
        "digits",
        "edm",
        10,
        "heun",
        15,
    )


@pytest.mark.slow  # imports every stage command (torch, clean-fid): seconds on a loaded CPU
def test_fdm_report_is_registered_and_fails_with_one_line(in_project):
    from fdm.cli import main

    tmp_path = in_project
    out = tmp_path / "reports"
    args = [
        "report",
        "--params",
        str(ROOT / "params.yaml"),
        "--runs",
        str(tmp_path / "none"),
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output.strip().startswith("fdm: error: no metrics.json with fid_digitsnet under")
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_welch_is_scipys_unequal_variance_interval():
    """The ablation's variant-less-baseline interval is Welch's t interval, as scipy's unequal-variance t test
    gives it from the raw values; one seed on a side leaves the difference without an interval."""
    a, b = [10.0, 12.5, 17.0, 11.0], [8.0, 8.4, 9.1]
    stat = {k: Stat(float(np.mean(v)), float(np.std(v, ddof=1)), len(v)) for k, v in (("a", a), ("b", b))}
    delta, low, high = welch(stat["a"], stat["b"])
    reference = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert delta == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((reference.low, reference.high), rel=1e-9)
    student = scipy_stats.ttest_ind(a, b, equal_var=True).confidence_interval(0.95)
    assert abs(low - student.low) > 0.01  # unequal spreads: not the pooled interval
    assert welch(stat["a"], Stat(9.0, None, 1)) == (pytest.approx(np.mean(a) - 9.0), None, None)
    assert welch(None, stat["b"]) == (None, None, None)


def test_ablation_axes_table_and_figure(in_project, figures_seen):
    """config/ablation.yaml: per axis, the final metric of each variant against its setting's value (read
    from the profile), beside its baseline's, and their difference paired by seed; the multiplier axis
    below has a known mean per variant. Seed s adds (s - 1) to every model and, to FDM models only,
    (s - 1) / 2 more: the per-seed differences spread by 1/2, the two sides' values by 1.5 and 1."""
    tmp_path = in_project
    params = load_params(ROOT / "config" / "ablation.yaml")
    final = {"fdm_edm_m05": 30.0, "fdm_edm_m1": 20.0, "fdm_edm": 10.0, "fdm_edm_m4": 40.0, "edm": 8.0}

    def value(dataset, variant, seed, kimg, sampler, nfe):
        extra = (seed - 1) / 2 if variant.startswith("fdm_") else 0.0
        at_end = final.get(variant, 50.0) + (seed - 1) + extra
        return at_end if kimg == params.duration_kimg else at_end + 100.0 / kimg

    write_runs(tmp_path / "runs", params, value)
    write_stats(tmp_path, params)
    written = {p.name for p in write_report(params, tmp_path / "runs", tmp_path / "reports")}
    assert_golden("ablation", tmp_path / "reports", figures_seen)
    assert {
        f"ablation_{a}.{x}" for a in ("multiplier", "warmup", "cin") for x in ("csv", "md", "png")
    } <= written
    with open(tmp_path / "reports" / "digits" / "ablation_multiplier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["value"]), r["variant"]) for r in rows] == [
        (0.5, "fdm_edm_m05"), (1.0, "fdm_edm_m1"), (2.0, "fdm_edm"), (4.0, "fdm_edm_m4")
    ]  # fmt: skip
    t2 = 4.302653  # t_{0.975, 2}
    # Welch: sds 1.5 and 1, n 3 each: se^2 = 0.75 + 1/3, Welch-Satterthwaite degrees of freedom
    se2 = 0.75 + 1 / 3
    dof = se2**2 / (0.75**2 / 2 + (1 / 3) ** 2 / 2)
    welch_half = scipy_stats.t.ppf(0.975, dof) * math.sqrt(se2)
    for r in rows:
        assert float(r["mean"]) == pytest.approx(final[r["variant"]])
        assert float(r["ci_high"]) - float(r["mean"]) == pytest.approx(t2 * 1.5 / math.sqrt(3), rel=1e-5)
        assert (r["baseline"], float(r["baseline_mean"]), r["n"]) == ("edm", 8.0, "3")
        assert float(r["difference"]) == pytest.approx(final[r["variant"]] - 8.0)
        paired_half = t2 * 0.5 / math.sqrt(3)  # the per-seed differences: sd 1/2
        assert float(r["difference_ci_high"]) - float(r["difference"]) == pytest.approx(paired_half, rel=1e-5)
        assert float(r["difference"]) - float(r["difference_ci_low"]) == pytest.approx(paired_half, rel=1e-5)
        assert float(r["welch_ci_high"]) - float(r["difference"]) == pytest.approx(welch_half, rel=1e-6)
        assert (r["pairs"], r["worse"]) == ("3", "3")
    cin = (tmp_path / "reports" / "digits" / "ablation_cin.md").read_text()
    assert "| scale | fdm_vp_scale | fdm_vp | 50.00 [" in cin and "| vp | 50.00 [" in cin
    assert (
        "| replace | fdm_edm | fdm_edm | 10.00 [6.27, 13.73] | edm | 8.00 [5.52, 10.48] | "
        "+2.00 [0.758, 3.24], worse in 3 of 3 | +2.00 [-1.07, 5.07] |" in cin
    )
    assert "Exploratory: the profile pre-registers no comparison" in cin and "Floor: fid_digitsnet" in cin
    speedups = (tmp_path / "reports" / "digits" / "speedup.md").read_text()
    assert "| fdm_edm_m4 | edm |" in speedups  # every FDM variant against its family's baseline


# Which code made the rows, and the metrics files against their records ------------------------------------------


def code(commit: str, source: str, stage: str) -> dict:
    return {
        "stage": stage,
        "package": "0.1.0",
        "commit": commit * 40,
        "dirty": False,
        "source_sha256": source * 64,
    }


def record_evaluations(runs: Path, params, evaluation_code) -> None:
    """What `fdm train` and `fdm evaluate` write beside the metrics: each run's training record, each point's
    timing.json (``evaluation_code(variant)``) and each snapshot's evaluated.json listing its metrics, their
    digest and the code."""
    from fdm.digest import file_sha256

    for dataset, variant, seed in params.models():
        run = paths.run(dataset, variant, seed, root=str(runs))
        Path(paths.trained(run)).write_text(json.dumps({"snapshots": {}, "code": code("a", "1", "train")}))
        for kimg in params.snapshot_kimg:
            points = {}
            for sampler, nfe in params.points(dataset, kimg):
                folder = Path(paths.point(run, kimg, sampler, nfe))
                timing = {"started": 0, "ended": 1, "code": evaluation_code(variant)}
                (folder / "timing.json").write_text(json.dumps(timing))
                values = json.loads((folder / "metrics.json").read_text())
                listed = {name: values[name] for name in params.eval.metric_names()}
                points[f"{sampler}-{nfe}"] = {
                    **listed,
                    "metrics_sha256": file_sha256(folder / "metrics.json"),
                }
            record = {"points": points, "code": evaluation_code(variant)}
            Path(paths.evaluated(run, kimg)).write_text(json.dumps(record))


def test_a_metrics_file_that_differs_from_its_evaluation_record_is_refused_and_nothing_written(in_project):
    tmp_path = in_project
    from fdm.cli import main
    from fdm.digest import file_sha256

    params = load_params(ROOT / "params.yaml")
    runs = tmp_path / "runs"
    write_runs(runs, params, smoke_value)
    record_evaluations(runs, params, lambda variant: code("b", "2", "evaluate"))
    metrics = Path(paths.metrics(paths.run("digits", "ve", 0, root=str(runs)), 20, "heun", 15))
    recorded = file_sha256(metrics)
    metrics.write_bytes(
        metrics.read_bytes().replace(b'"num_samples": 300', b'"num_samples": 301')
    )  # one byte
    args = [
        "report",
        "--params",
        str(ROOT / "params.yaml"),
        "--runs",
        str(runs),
        "--out",
        str(tmp_path / "made"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith(f"fdm: error: {metrics} has SHA-256 {file_sha256(metrics)}, but ")
    assert recorded in line and "\n" not in line
    assert not (tmp_path / "made").exists()


def test_each_table_names_the_code_of_its_rows_and_warns_when_it_differs(in_project):
    tmp_path = in_project
    params = load_params(ROOT / "params.yaml")
    runs = tmp_path / "runs"
    write_runs(runs, params, smoke_value)
    write_stats(tmp_path, params)
    # ve's points were evaluated by other code than the rest's.
    record_evaluations(
        runs, params, lambda v: code("c" if v == "ve" else "b", "3" if v == "ve" else "2", "evaluate")
    )
    result = CliRunner().invoke(
        report,
        ["--params", str(ROOT / "params.yaml"), "--runs", str(runs), "--out", str(tmp_path / "reports")],
    )  # fdm: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / "digits"
    text = (folder / "fid_vs_mimg.md").read_text()
    assert "- training: aaaaaaaaaaaa, source 111111111111" in text
    assert "- evaluation: bbbbbbbbbbbb, source 222222222222; cccccccccccc, source 333333333333" in text
    assert "**warning**: the rows of fid_vs_mimg.md come from different evaluate code" in text
    warnings = [line for line in result.stderr.splitlines() if line.startswith("fdm: warning:")]
    tables = ("claims.md", "fid_vs_mimg.md", "fid_vs_nfe.md", "paired.md", "speedup.md")
    assert sorted(line.split(" come from")[0].rsplit("/", 1)[1] for line in warnings) == list(tables)
    assert all("different evaluate code" in line for line in warnings)
    versions = json.loads((folder / "versions.json").read_text())
    assert versions["report"]["stage"] == "report"
    assert sorted(r["rows"] for r in versions["rows"]) == [5, 25]  # ve's 5 points, the others' 25

    # Every row from one version: no warning.
    record_evaluations(runs, params, lambda v: code("b", "2", "evaluate"))
    again = CliRunner().invoke(report, ["--params", str(ROOT / "params.yaml"), "--runs", str(runs),
                                        "--out", str(tmp_path / "reports")])  # fmt: skip
    assert again.exit_code == 0 and "fdm: warning" not in again.stderr
    assert "warning" not in (folder / "fid_vs_mimg.md").read_text()


def test_the_records_alone_make_the_same_report(in_project):
    """What a DVC remote brings to a new clone: the evaluation records without their point folders. The
    report reads the records, so it is the same, code lines included, byte for byte."""
    import shutil

    params = load_params(ROOT / "params.yaml")
    runs = in_project / "runs"
    write_runs(runs, params, smoke_value)
    write_stats(in_project, params)
    record_evaluations(runs, params, lambda v: code("b", "2", "evaluate"))
    args = ["--params", str(ROOT / "params.yaml"), "--runs", str(runs)]

    def made(out: str) -> dict:
        result = CliRunner().invoke(
            report, [*args, "--out", out, "--summary", f"{out}.json", "--plots", f"{out}-plots"]
        )
        assert result.exit_code == 0, result.output
        files = sorted(p for p in Path(out).rglob("*") if p.is_file())
        return {str(p.relative_to(out)): p.read_bytes() for p in files} | {
            "summary": Path(f"{out}.json").read_bytes()
        }

    before = made("a")
    folders = sorted(runs.glob("*/*/s*/eval/*/*-*"))
    expected = [
        (m, k, point)
        for m in params.models()
        for k in params.snapshot_kimg
        for point in params.points("digits", k)
    ]
    assert len(folders) == len(expected) > 0
    for folder in folders:
        shutil.rmtree(folder)
    assert made("b") == before
    # A record whose metric is not a number is a clear error, not a silent gap.
    from fdm.cli import main

    record = Path(paths.evaluated(paths.run("digits", "edm", 0, root=str(runs)), 20))
    data = json.loads(record.read_text())
    data["points"]["heun-15"][params.report.metric] = "nan"
    record.write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["report", *args, "--out", "c"])
    assert (
        result.exit_code == 2
        and f"{record}: {params.report.metric} is 'nan', not a finite number" in result.output
    )


def test_summary_for_dvc_holds_the_means_paired_differences_speedups_and_the_confirmatory_statistic(
    in_project,
):
    """config/confirm.yaml with known values: summary.json has, per variant and snapshot, the mean over
    seeds at the main point; the mean paired difference; the speedups; the pre-registered statistic; and
    the plot files hold the same means, one file per dataset."""
    params_path = ROOT / "config" / "confirm.yaml"
    params = load_params(params_path)
    write_runs(in_project / "runs", params, confirm_value)
    write_stats(in_project, params)
    args = ["--params", str(params_path), "--runs", "runs", "--out", "reports", "--summary", "s.json",
            "--plots", "plots"]  # fmt: skip
    assert CliRunner().invoke(report, args).exit_code == 0
    summary = json.loads((in_project / "s.json").read_text())
    assert list(summary) == ["digits"]
    digits = summary["digits"]
    assert sorted(digits) == ["confirm", "fid_digitsnet", "paired", "speedup"]
    seeds = range(5)
    for kimg in (40, 80, 120, 160):
        edm = np.mean([confirm_value("digits", "edm", s, kimg, "dpmpp_3s", 15) for s in seeds])
        fdm = np.mean([confirm_value("digits", "fdm_edm", s, kimg, "dpmpp_3s", 15) for s in seeds])
        assert digits["fid_digitsnet"]["edm"][str(kimg)] == pytest.approx(edm)
        assert digits["fid_digitsnet"]["fdm_edm"][str(kimg)] == pytest.approx(fdm)
        assert digits["paired"]["fdm_edm"][str(kimg)] == pytest.approx(fdm - edm)
    assert "edm" not in digits["paired"]  # a baseline has no baseline
    differences = [0.5] * 4 + [-0.5]
    half = scipy_stats.t.ppf(0.975, 4) * np.std(differences, ddof=1) / math.sqrt(5)
    assert digits["confirm"] == pytest.approx(
        {"difference": 0.3, "ci_low": 0.3 - half, "ci_high": 0.3 + half, "worse": 4, "pairs": 5}
    )
    rows = {(r["measure"], r["sampler"]): r for r in csv_rows(in_project / "reports/digits/speedup.csv")}
    expected = {
        "training": rows["kimg", "dpmpp_3s"]["speedup"],
        "sampling": rows["nfe", "dpmpp_3s"]["speedup"],
    }
    assert {k: (None if v == "" else pytest.approx(float(v))) for k, v in expected.items()} == digits[
        "speedup"
    ]["fdm_edm"]
    mimg = csv_rows(in_project / "plots/fid_vs_mimg/digits.csv")
    assert [(r["series"], r["kimg"]) for r in mimg] == [
        (v, str(k)) for v in ("edm", "fdm_edm") for k in (40, 80, 120, 160)
    ]
    assert float(mimg[-1]["fid"]) == pytest.approx(digits["fid_digitsnet"]["fdm_edm"]["160"])
    assert float(mimg[-1]["mimg"]) == pytest.approx(0.16)
    nfe = csv_rows(in_project / "plots/fid_vs_nfe/digits.csv")
    assert {r["series"] for r in nfe} == {"edm dpmpp_3s", "fdm_edm dpmpp_3s"}
    assert sorted({int(r["nfe"]) for r in nfe}) == [5, 8, 10, 15]


def test_every_formulation_is_paired_with_its_base_and_has_its_family_colour(in_project):
    """A profile training every formulation of fdm.names: the report measures each FDM variant against
    its base, and plots each family in its own colour (not the grey of an unknown one), FDM dashed."""
    tmp_path = in_project
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["variants"] = list(names.FORMULATIONS)
    data["train"]["variants"] = {}
    profile = tmp_path / "all.yaml"
    profile.write_text(yaml.safe_dump(data))
    params = load_params(profile)
    assert {v: params.baseline(v) for v in params.variants if params.baseline(v)} == names.BASELINE
    folder = run_report(tmp_path, profile, smoke_value)
    pairs = {(r["variant"], r["baseline"]) for r in csv_rows(folder / "speedup.csv")}
    assert pairs == set(names.BASELINE.items())
    styles = line_styles({v: v for v in names.FORMULATIONS})
    colours = {base: styles[base]["color"] for base in names.BASES}
    assert len(set(colours.values())) == len(names.BASES) and "tab:gray" not in colours.values()
    for fdm, base in names.BASELINE.items():
        assert styles[fdm] == {"color": colours[base], "marker": "^", "linestyle": "--"}
        assert styles[base] == {"color": colours[base], "marker": "o", "linestyle": "-"}


# Paired differences, the claims, the floor ---------------------------------------------------------------------


def test_paired_difference_is_scipys_paired_t_interval_with_the_sign_count():
    """Per-seed differences of the seeds both have: mean, scipy's ttest_rel interval, how many are worse."""
    variant = {0: 12.0, 1: 9.5, 2: 14.0, 3: 11.0, 7: 30.0}  # seed 7: no baseline run, not paired
    baseline = {0: 10.0, 1: 10.0, 2: 11.5, 3: 10.2, 5: 1.0}
    result = paired(variant, baseline)
    common = [0, 1, 2, 3]
    reference = scipy_stats.ttest_rel([variant[s] for s in common], [baseline[s] for s in common])
    interval = reference.confidence_interval(0.95)
    assert result.difference == pytest.approx(np.mean([2.0, -0.5, 2.5, 0.8]))
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    assert (result.pairs, result.worse) == (4, 3)
    assert result.variant_mean == pytest.approx(np.mean(list(variant.values())))  # every seed of a side
    welch_interval = scipy_stats.ttest_ind(list(variant.values()), list(baseline.values()), equal_var=False)
    assert result.welch_ci_low == pytest.approx(welch_interval.confidence_interval(0.95).low, rel=1e-9)
    one = paired({0: 3.0}, {0: 2.0, 1: 2.5})
    assert (one.difference, one.ci_low, one.ci_high, one.pairs, one.worse) == (1.0, None, None, 1, 1)
    assert paired({0: 1.0}, {1: 1.0}) is None


def confirm_value(dataset, variant, seed, kimg, sampler, nfe):
    """FDM at N/2 is 0.5 worse than EDM at N on seeds 0-3 and 0.5 better on seed 4: +0.3, worse on 4 of 5."""
    edm = 2.0 + 80.0 / kimg + 0.1 * seed + 0.01 * nfe
    if variant == "edm":
        return edm
    return 2.0 + 40.0 / kimg + 0.1 * seed + 0.01 * nfe + (0.5 if seed < 4 else -0.5)


def test_confirm_profile_report_opens_with_the_pre_registered_statistic(in_project, figures_seen):
    """config/confirm.yaml: the command prints the pre-registered statistic before anything else, claims.md
    opens with it, and every other comparison is labelled exploratory."""
    params_path = ROOT / "config" / "confirm.yaml"
    params = load_params(params_path)
    write_runs(in_project / "runs", params, confirm_value)
    write_stats(in_project, params)
    args = ["--params", str(params_path), "--runs", "runs", "--out", "reports"]
    result = CliRunner().invoke(report, args)
    assert result.exit_code == 0, result.output
    assert_golden("confirm", in_project / "reports", figures_seen)
    first, *rest = result.output.splitlines()
    differences = [0.5] * 4 + [-0.5]
    half = scipy_stats.t.ppf(0.975, 4) * np.std(differences, ddof=1) / math.sqrt(5)
    low, high = 0.3 - half, 0.3 + half
    assert first == (
        "pre-registered (digits): fid_digitsnet of fdm_edm at 0.08 Mimg less edm at 0.16 Mimg (dpmpp_3s, NFE 15): "
        f"+0.3 [{low:.3g}, {high:.3g}] (95% Student-t interval over 5 training seed pairs); FDM worse on 4 of 5 seeds"
    )
    assert all(line.startswith("wrote ") for line in rest)
    folder = in_project / "reports" / "digits"
    claims = (folder / "claims.md").read_text()
    assert claims.splitlines()[2].startswith(
        "**Pre-registered (confirmatory).** fid_digitsnet of fdm_edm at 0.08"
    )
    rows = csv_rows(folder / "claims.csv")
    assert [(r["role"], r["form"], r["baseline_kimg"]) for r in rows if r["form"] == "training"] == [
        ("confirmatory", "training", "160"), ("exploratory", "training", "80")
    ]  # fmt: skip
    # Sampling, the paper's form: NFE 5 against 15 only (8 and 10 have no NFE near 3x in the grid).
    assert [(r["variant_nfe"], r["baseline_nfe"]) for r in rows if r["form"] == "sampling_paper"] == [
        ("5", "15")
    ]
    for name in ("paired.md", "speedup.md"):
        text = (folder / name).read_text()
        assert (
            "Exploratory: the profile's one pre-registered comparison is fdm_edm at 0.08 Mimg against edm"
            in text
        )
    floor = csv_rows(folder / "floor.csv")
    assert [(r["metric"], r["n"], r["reference"], r["how"]) for r in floor] == [
        ("fid_digitsnet", "2000", "500", "with replacement")
    ]  # fmt: skip


def test_one_seed_report_has_no_interval_no_nan_and_says_why(in_project, figures_seen):
    folder = run_report(in_project, ROOT / "params.yaml", smoke_value)
    assert_golden("smoke", folder.parent, figures_seen)
    for path in folder.iterdir():
        if path.suffix in (".csv", ".md"):
            assert "nan" not in path.read_text().lower(), path.name
    assert "no interval (a t interval needs two seeds)" in (folder / "fid_vs_mimg.md").read_text()
    paired_text = (folder / "paired.md").read_text()
    assert (
        "One training seed per model: the difference of the one pair and its sign, no interval" in paired_text
    )
    assert ", worse in 0 of 1 |" in paired_text
    claims = csv_rows(folder / "claims.csv")
    assert claims and all(r["ci_low"] == "" for r in claims)


def test_the_floor_is_a_line_in_every_figure():
    from fdm.report.ablation import ablation_figure
    from fdm.report.figures import fid_vs_mimg_figure, fid_vs_nfe_figure, line_styles

    stats = aggregate(
        records("d", "edm", {10: 30.0, 20: 20.0}) + records("d", "edm", {5: 25.0, 15: 22.0}, kimg=20)
    )
    mimg = fid_vs_mimg_rows(stats, "d", ("edm",), "heun", 15)
    nfe = fid_vs_nfe_rows(stats, "d", ("edm",), 20)
    styles = line_styles({"edm": "edm", "fdm_edm": "fdm_edm"})
    floor = (4.5, "floor: 400 real images")
    figures = [
        fid_vs_mimg_figure(mimg, "d", styles, "fid", floor),
        fid_vs_nfe_figure(nfe, "d", styles, "fid", floor),
    ]
    row = {"axis": "m", "setting": "fdm_multiplier", "value": 2.0, "variant": "edm", "formulation": "edm", "kimg": 20,
           "sampler": "heun", "nfe": 15, "mean": 20.0, "ci_low": None, "ci_high": None, "baseline": "",
           "baseline_mean": None}  # fmt: skip
    figures.append(ablation_figure([row], mimg, "d", styles, "fid", floor))
    for figure in figures:
        for ax in figure.axes:
            lines = [line for line in ax.get_lines() if line.get_label() == floor[1]]
            assert len(lines) == 1 and list(lines[0].get_ydata()) == [4.5, 4.5]
            assert ax.get_ylim()[0] <= 4.5  # the axis reaches down to it


# ----------------------------------------------------------------------------- reviewed golden files

GOLDEN = ROOT / "tests" / "fixtures" / "report_golden"


def figure_anatomy(figure) -> dict:
    """What a reader of a figure sees, as data: its size and layout, and per axes the title, labels,
    scales, limits, tick labels, legend and every line (label, colour, style, marker, width, alpha and
    points) and shaded band. Read after the figure is drawn, when the tick labels exist."""
    from matplotlib.colors import to_hex

    def numbers(values):
        return [float(f"{float(v):.6g}") for v in values]

    axes = []
    for ax in figure.axes:
        legend = ax.get_legend()
        axes.append({
            "title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "xscale": ax.get_xscale(), "yscale": ax.get_yscale(),
            "xlim": numbers(ax.get_xlim()), "ylim": numbers(ax.get_ylim()), "grid": any(line.get_visible() for line in ax.xaxis.get_gridlines()),
            "xticks": numbers(ax.get_xticks()), "xticklabels": [t.get_text() for t in ax.get_xticklabels()],
            "yticklabels": [(t.get_text(), t.get_fontsize()) for t in ax.get_yticklabels(minor=True)]
            + [(t.get_text(), t.get_fontsize()) for t in ax.get_yticklabels()],
            "legend": None if legend is None else {
                "texts": [t.get_text() for t in legend.get_texts()], "title": legend.get_title().get_text(),
                "fontsize": legend.get_texts()[0].get_fontsize() if legend.get_texts() else None,
            },
            "lines": [
                {"label": line.get_label(), "color": to_hex(line.get_color()), "linestyle": line.get_linestyle(),
                 "marker": line.get_marker(), "linewidth": line.get_linewidth(), "alpha": line.get_alpha(),
                 "markersize": line.get_markersize(), "zorder": line.get_zorder(),
                 "x": numbers(line.get_xdata()), "y": numbers(line.get_ydata())}
                for line in ax.get_lines()
            ],
            "collections": [
                {"type": type(c).__name__, "alpha": c.get_alpha(), "label": c.get_label(),
                 "facecolors": [to_hex(f, keep_alpha=True) for f in c.get_facecolors()],
                 "paths": [numbers(np.asarray(p.vertices).ravel()) for p in c.get_paths()]}
                for c in ax.collections
            ],
            "texts": [t.get_text() for t in ax.texts],
        })  # fmt: skip
    return {"size": numbers(figure.get_size_inches()), "layout": type(figure.get_layout_engine()).__name__, "suptitle": figure.get_suptitle() or None,
            "axes": axes}  # fmt: skip


@pytest.fixture
def figures_seen(monkeypatch) -> dict:
    """What every figure the report writes shows (``figure_anatomy``), by its path under the report root."""
    import fdm.report.write as write

    seen, real_write_figure = {}, write.write_figure

    def record_figure(path, figure):
        real_write_figure(path, figure)  # drawn: tick labels and the layout are settled
        seen[f"{path.parent.name}/{path.name}"] = figure_anatomy(figure)

    monkeypatch.setattr(write, "write_figure", record_figure)
    return seen


def assert_golden(case: str, reports: Path, figures: dict) -> None:
    """Every Markdown and CSV file under ``reports``, and what every figure shows, equal the copies under
    tests/fixtures/report_golden/<case>/, which were read line by line against docs/report.md when
    written: a changed header, caption, column, number format, colour, scale or label fails here. After
    a deliberate change of the report, rewrite them with ``FDM_REGEN_GOLDEN=1 pytest tests/test_report.py``
    and read the diff before committing."""
    got = {
        path.relative_to(reports).as_posix(): path.read_text()
        for path in sorted(reports.rglob("*"))
        if path.suffix in (".md", ".csv")
    }
    import matplotlib

    release = ".".join(matplotlib.__version__.split(".")[:2])
    got["figures.json"] = json.dumps({"matplotlib": release, **figures}, indent=1, sort_keys=True) + "\n"
    folder = GOLDEN / case
    if os.environ.get("FDM_REGEN_GOLDEN") == "1":
        shutil.rmtree(folder, ignore_errors=True)
        for name, text in got.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    expected = {
        path.relative_to(folder).as_posix(): path.read_text()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    assert sorted(got) == sorted(expected)
    golden_release = json.loads(expected["figures.json"])["matplotlib"]
    if golden_release != release:  # limits and ticks are matplotlib's choices: compare what our code sets
        got["figures.json"], expected["figures.json"] = (
            json.dumps(_set_by_us(json.loads(text)))
            for text in (got["figures.json"], expected["figures.json"])
        )
    for name in expected:
        assert got[name] == expected[name], f"{case}/{name} differs from its golden copy"


def _set_by_us(figures: dict) -> dict:
    """A figure anatomy without what matplotlib picks itself (autoscaled limits, tick positions and
    labels), for goldens written under another matplotlib release."""
    volatile = {"xlim", "ylim", "xticks", "xticklabels", "yticklabels"}
    return {
        name: {
            **figure,
            "axes": [{k: v for k, v in ax.items() if k not in volatile} for ax in figure["axes"]],
        }
        for name, figure in figures.items()
        if name != "matplotlib"
    }


def test_compare_pairs_any_two_variants_of_a_report_by_seed(tmp_path):
    """`fdm compare`: per seed i the difference value(a, i) - value(b, i), here 1, 2, 3 at every point
    but the first snapshot (-1, -2, -3): mean 2, t interval 2 ± t(0.975, 2) / sqrt(3), worse in 3 of 3."""
    from fdm.cli import main

    folder = tmp_path / "reports" / "digits"
    folder.mkdir(parents=True)
    points = [(10, "heun", 19), (20, "heun", 19), (20, "heun", 7), (20, "dpmpp_3s", 5)]
    rows = [
        {"variant": v, "train_seed": s, "kimg": k, "sampler": sm, "nfe": n, "metric": "fid",
         "value": 10.0 + s + (0 if v == "b" else (s + 1) * (-1 if k == 10 else 1))}
        for v in ("a", "b", "c") for s in range(3) for k, sm, n in points
    ]  # fmt: skip
    from fdm.report.records import PER_SEED_COLUMNS
    from fdm.report.tables import to_csv

    (folder / "per_seed.csv").write_text(to_csv(rows, PER_SEED_COLUMNS))
    out = tmp_path / "a_vs_b.md"
    result = CliRunner().invoke(main, ["compare", str(folder / "per_seed.csv"), "a", "b", "--out", str(out)])
    assert result.exit_code == 0, result.output
    half = scipy_stats.t.ppf(0.975, 2) / math.sqrt(3)
    text = out.read_text()
    assert text == result.output and text.startswith("# digits: a against b, paired by training seed (fid)")
    assert f"| 0.01 | -2.00 [{-2 - half:.3g}, {-2 + half:.3g}], worse in 0 of 3 |" in text
    assert f"| 0.02 | +2.00 [{2 - half:.3g}, {2 + half:.2f}], worse in 3 of 3 |" in text
    assert "## Final snapshot (0.02 Mimg), heun" in text and "| 7 | +2.00 [" in text
    assert "## Final snapshot (0.02 Mimg), dpmpp_3s" in text and "| 5 | +2.00 [" in text
    table = csv_rows(out.with_suffix(".csv"))
    assert [(r["kimg"], r["sampler"], r["nfe"], r["worse"]) for r in table] == [
        ("10", "heun", "19", "0"), ("20", "heun", "19", "3"), ("20", "dpmpp_3s", "5", "3"), ("20", "heun", "7", "3")
    ]  # fmt: skip
    for args, message in [
        (
            [str(folder / "per_seed.csv"), "a", "z"],
            "fdm: error: no variant 'z' in the report; it has a, b, c",
        ),
        (
            [str(folder / "none.csv"), "a", "b"],
            f"fdm: error: {folder / 'none.csv'}: No such file or directory",
        ),
        ([str(out.with_suffix(".csv")), "a", "b"], "not a per_seed.csv"),
    ]:
        result = CliRunner().invoke(main, ["compare", *args])
        assert result.exit_code != 0 and len(result.output.strip().splitlines()) == 1, result.output
        assert message in result.output


# Edge cases of the tables and figures: no runs, one seed, no baseline ---------------------------------------------


def draw(figure):
    """Lay out and draw ``figure`` on an Agg canvas (no pyplot state), so tick labels and legend positions exist."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure


def test_ablation_of_variants_without_runs_one_seed_or_no_baseline():
    """An axis row with no runs shows "–" and empty cells, one with one seed no interval (a zero error
    bar in the figure), one without a baseline no baseline; the baseline's band in the figure is a fill
    without an edge, and the grid is faint (alpha 0.3). A one-variant axis is a table of one row."""
    from fdm.config import Ablation
    from fdm.report.ablation import ablation_figure, ablation_markdown, ablation_rows

    main = ("heun", 15)
    runs = [r for s in range(3) for r in records("d", "fdm_a", {100: 10.0 + s}, seed=s)]
    runs += [r for s in range(3) for r in records("d", "edm", {100: 8.0 + 2 * s}, seed=s)]
    runs += records("d", "fdm_b", {100: 12.0}) + records("d", "fdm_d", {100: 14.0})
    axis = Ablation("m", "fdm.multiplier", ("fdm_a", "fdm_b", "fdm_c", "fdm_d"))
    settings = {"fdm_a": 1.0, "fdm_b": 2.0, "fdm_c": 4.0, "fdm_d": 8.0}
    formulations = dict.fromkeys(axis.variants, "fdm_edm") | {"edm": "edm"}
    baselines = {"fdm_a": "edm", "fdm_b": "edm", "fdm_c": "edm"}  # fdm_d: none
    rows = ablation_rows(
        aggregate(runs), by_seed(runs), "d", axis, settings, formulations, baselines, main, 100
    )
    a, b, c, d = rows
    assert (a["n"], a["baseline_n"], a["pairs"]) == (3, 3, 3) and a["ci_low"] < 11.0 < a["ci_high"]
    assert [b[k] for k in ("mean", "std", "ci_low", "ci_high", "n", "pairs")] == [
        12.0,
        None,
        None,
        None,
        1,
        1,
    ]
    assert (c["mean"], c["std"], c["ci_low"], c["ci_high"], c["n"]) == (None, None, None, None, 0)
    assert (c["baseline_mean"], c["baseline_n"], c["difference"]) == (10.0, 3, None)
    assert [d[k] for k in ("baseline", "baseline_mean", "baseline_ci_low", "baseline_n")] == [
        "",
        None,
        None,
        0,
    ]
    text = ablation_markdown(rows, "d", "fid")
    assert "| 4.0 | fdm_c | fdm_edm | – | edm | 10.00 [" in text
    assert "| 8.0 | fdm_d | fdm_edm | 14.00 | – | – | – | – |" in text
    one = ablation_markdown(rows[1:2], "d", "fid")
    assert one.startswith("# d: ablation of fdm.multiplier (m)")
    assert "| 2.0 | fdm_b | fdm_edm | 12.00 | edm |" in one

    styles = line_styles(formulations)
    left = draw(ablation_figure(rows, [], "d", styles, "fid")).axes[0]
    (bars,) = left.containers
    segments = bars.lines[2][0].get_segments()  # per point (fdm_a, fdm_b, fdm_d): its interval
    np.testing.assert_allclose(segments[1], [[1.0, 12.0], [1.0, 12.0]])  # one seed: no interval, no bar
    np.testing.assert_allclose([segments[0][0][1], segments[0][1][1]], [a["ci_low"], a["ci_high"]])
    (band,) = left.patches
    assert band.get_linewidth() == 0 and band.get_alpha() == 0.1
    assert all(line.get_alpha() == 0.3 for line in left.yaxis.get_gridlines())


def test_figures_put_the_legend_right_of_the_axes_read_ticks_as_g_numbers_and_warn_nothing():
    """The curve figures: a legend outside the axes on the right with a small (x-small) title; a log
    axis labelled with plain %g numbers (1e-05 for a KID-sized value); drawing raises no warning."""
    import warnings

    from matplotlib.font_manager import FontProperties

    from fdm.report.figures import fid_vs_mimg_figure

    runs = [r for v in ("edm", "fdm_edm") for s in range(2)
            for r in records("d", v, {10: 1e-4 * (1 + s), 20: 1e-6 * (1 + s)}, seed=s)]  # fmt: skip
    rows = fid_vs_mimg_rows(aggregate(runs), "d", ["edm", "fdm_edm"], "heun", 15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figure = draw(fid_vs_mimg_figure(rows, "d", line_styles(PAIRS), "kid"))
    (ax,) = figure.axes
    legend = ax.get_legend()
    assert legend.get_window_extent().x0 >= ax.get_window_extent().x1
    assert legend.get_title().get_fontsize() == FontProperties(size="x-small").get_size_in_points()
    assert ax.get_yscale() == "log" and "1e-05" in [t.get_text() for t in ax.get_yticklabels()]


def test_claims_compare_only_snapshots_with_a_half_and_always_state_the_pre_registered_pair():
    """Training: N against N/2 only where N/2 is a snapshot (an odd N has no half); sampling: the ratio
    band [2.5, 3.5] is closed (NFE 2 against 7); the pre-registered pair is the first row also when it
    is not among the profile's pairs, with no runs; with one seed pair, no interval."""
    from fdm.config import Confirm
    from fdm.report.claims import claim_rows, claims_markdown

    values = {("d", v, k, "heun", 15): {0: 10.0 - k / 100 + (v == "fdm_edm")} for v in ("edm", "fdm_edm")
              for k in (50, 100, 101)}  # fmt: skip
    values |= {("d", "fdm_edm", 101, "heun", 2): {0: 5.0}, ("d", "edm", 101, "heun", 7): {0: 4.0}}
    args = (values, "d", {"fdm_edm": "edm"}, ("heun", 15), (50, 100, 101), 101)
    rows = claim_rows(*args, Confirm("ve", 100))
    first, *others = rows
    assert (first["role"], first["variant"], first["baseline"], first["sampler"]) == (
        "confirmatory", "fdm_ve", "ve", "heun"
    )  # fmt: skip
    assert (first["variant_kimg"], first["variant_nfe"], first["baseline_kimg"], first["baseline_nfe"]) == (
        50, 15, 100, 15
    )  # fmt: skip
    assert (first["difference"], first["pairs"]) == (None, 0)
    training = [(r["variant_kimg"], r["baseline_kimg"]) for r in others if r["form"] == "training"]
    assert training == [(50, 100)]
    sampling = [(r["variant_nfe"], r["baseline_nfe"]) for r in others if r["form"] == "sampling_paper"]
    assert sampling == [(2, 7)]
    text = claims_markdown(rows, "d", "fid")
    assert "| fdm_ve | ve | 0.1 | – | – | – |  |  | confirmatory |" in text
    assert "not available, one of the two has no runs" in text
    one = claims_markdown(claim_rows(*args, Confirm("edm", 100)), "d", "fid")
    assert "(one training seed pair (n=1), no interval); FDM worse on 1 of 1 seeds" in one
    empty = claims_markdown([], "d", "fid")
    assert "\nNo snapshot at half of another: nothing to compare.\n" in empty
    assert empty.endswith("\nNo NFE study at the final snapshot.\n")


def test_paired_tables_of_no_rows_of_a_missing_snapshot_and_of_two_seed_pairs():
    """No rows: the title and the note, one newline at the end; a variant with no run at a snapshot: "–";
    two seed pairs already give an interval (the note says so)."""
    from fdm.report.paired import paired_markdown, paired_note, paired_rows

    empty = paired_markdown([], "d", "fid", ["fdm_edm"])
    assert empty == (
        "# d: each variant against its baseline, paired by training seed (fid)\n\n" + paired_note([]) + "\n"
    )
    values = {("d", v, k, "heun", 15): {0: 1.0, 1: 2.0 + (v == "fdm_edm")} for v in ("edm", "fdm_edm")
              for k in (10, 20)}  # fmt: skip
    values |= {("d", v, 20, "heun", 15): {0: 1.0, 1: 3.0} for v in ("ve", "fdm_ve")}
    rows = paired_rows(values, "d", {"fdm_edm": "edm", "fdm_ve": "ve"}, ("heun", 15), (10, 20), 20)
    text = paired_markdown(rows, "d", "fid", ["fdm_edm", "fdm_ve"])
    assert "| 0.01 | +0.5 [-5.85, 6.85], worse in 1 of 2 | – |" in text
    assert paired_note(rows).startswith("Paired by training seed") and "n=2 seed pairs" in paired_note(rows)


def test_speedup_rows_without_runs_have_empty_cells_and_paper_only_points_no_seeds():
    """A variant with no runs, or whose baseline has none, has no target, no crossing and no strict cells:
    empty cells beside its status; a point the paper reports and we did not run counts no seeds (n=0)."""
    runs = records("d", "edm", {10: 4.0, 20: 2.0}) + records("d", "fdm_ve", {10: 4.0, 20: 2.0})
    rows = speedup_rows(runs, "d", {"fdm_edm": "edm", "fdm_ve": "ve"}, ("heun", 15), 20)
    text = speedup_markdown(rows, "d", "fid", False)
    assert "\n| fdm_edm | edm |  |  |  | no runs |  |  |  |  | 1/0 |\n" in text
    assert "\n| fdm_ve | ve |  |  |  | no baseline runs |  |  |  |  | 0/1 |\n" in text
    nfe = fid_vs_nfe_rows(aggregate(runs), "d", ["edm"], 20, {"heun": {"edm": {7: 3.0}}})
    assert [(r["nfe"], r["seeds"], r["n"], r["mean"], r["paper"]) for r in nfe] == [
        (7, 0, 0, None, 3.0),
        (15, 1, 1, 2.0, None),
    ]


def test_csv_lines_end_in_a_line_feed_on_every_platform(monkeypatch):
    """The CSV files are byte-identical across reruns and platforms: LF line ends, also where the
    platform's line separator is CRLF."""
    import os

    monkeypatch.setattr(os, "linesep", "\r\n")
    assert to_csv([{"a": 1, "b": 0.5}, {"a": None, "b": "x"}], ["a", "b"]) == "a,b\n1,0.500000\n,x\n"


def test_code_lines_mark_uncommitted_changes_and_name_every_stage_that_differs():
    from fdm.report.versions import footer, label

    dirty = {"commit": "a" * 40, "dirty": True, "source_sha256": "1" * 64}
    assert label(dirty) == "aaaaaaaaaaaa (+ uncommitted changes), source 111111111111"
    clean = {"commit": "unknown", "dirty": None, "source_sha256": "2" * 64}
    text = footer("t.md", [{"train": dirty, "evaluate": dirty}, {"train": clean, "evaluate": clean}])
    assert text.endswith(
        "- training: aaaaaaaaaaaa (+ uncommitted changes), source 111111111111; unknown commit, source "
        "222222222222\n- evaluation: aaaaaaaaaaaa (+ uncommitted changes), source 111111111111; unknown "
        "commit, source 222222222222\n- **warning**: the rows of t.md come from different train and evaluate "
        "code (rerun the stale jobs, or compare only rows of one version)\n"
    )


def test_a_record_that_lists_no_points_falls_back_to_each_points_metrics(tmp_path):
    """``point_values``: a point the evaluation record does not list (here: a record without a ``points``
    entry) is read from the point's metrics.json."""
    from fdm.report.records import point_values

    run = str(tmp_path / "run")
    metrics = Path(paths.metrics(run, 20, "heun", 15))
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps({"fid": 3.5}))
    Path(paths.evaluated(run, 20)).write_text(json.dumps({"code": code("b", "2", "evaluate")}))
    assert point_values(run, 20, [("heun", 15), ("heun", 7)], "fid") == {("heun", 15): 3.5}


def test_compare_ends_at_the_last_snapshot_and_refuses_a_file_of_two_metrics(tmp_path):
    """``fdm compare`` over three snapshots: the final-snapshot points are those of the last one; a
    per_seed.csv of two metrics is refused, saying how many it found."""
    from fdm.report.compare import compare_rows, read_per_seed
    from fdm.report.records import PER_SEED_COLUMNS

    points = [(10, "heun", 19), (20, "heun", 19), (30, "heun", 19), (30, "heun", 7), (20, "dpmpp_3s", 5)]
    values = {(v, k, s, n): {0: 1.0 + (v == "a"), 1: 2.0} for v in ("a", "b") for k, s, n in points}
    rows = compare_rows(values, "a", "b")
    assert [(r["kimg"], r["sampler"], r["nfe"]) for r in rows] == [
        (10, "heun", 19), (20, "heun", 19), (30, "heun", 19), (30, "heun", 7)
    ]  # fmt: skip
    per_seed = tmp_path / "per_seed.csv"
    rows = [{"variant": "a", "train_seed": 0, "kimg": 10, "sampler": "heun", "nfe": 19, "metric": m, "value": 1.0}
            for m in ("fid", "kid")]  # fmt: skip
    per_seed.write_text(to_csv(rows, PER_SEED_COLUMNS))
    with pytest.raises(FdmError, match=f"^{per_seed}: expected one metric, found 2$"):
        read_per_seed(per_seed)


def test_each_table_names_the_code_of_its_own_points_and_write_report_returns_every_file(
    in_project, monkeypatch
):
    """A smoke profile with an ablation axis and a released checkpoint evaluated at the main point only,
    whose main point (heun, NFE 15) was evaluated by code b and every other point by code c, read from
    each point's timing.json (no evaluation record yet). The tables at the main point (FID vs Mimg, the
    ablation) name only b and do not warn; FID vs NFE (the final snapshot's points) names both and warns.
    The checkpoint's table has its one value, without a paper's number. write_report returns exactly
    the files it wrote, the DVC summary and plots included, whose NFE curve holds the table's means."""
    import fdm.report.write as write

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    axis = {"name": "m", "setting": "fdm.multiplier", "variants": ["fdm_edm", "fdm_ve"]}
    data["report"]["ablations"] = [axis]
    data["pretrained"] = [{"dataset": "digits", "formulation": "edm", "url": "https://example.org/edm.pkl"}]
    (in_project / "profile.yaml").write_text(yaml.safe_dump(data))
    params = load_params(in_project / "profile.yaml")
    runs = in_project / "runs"
    write_runs(runs, params, smoke_value)
    write_stats(in_project, params)
    main = (params.eval.main["digits"].sampler, params.eval.main["digits"].nfe)
    checkpoint = paths.pretrained("digits", "edm", root=str(runs))
    Path(paths.metrics(checkpoint, 20, *main)).parent.mkdir(parents=True)
    Path(paths.metrics(checkpoint, 20, *main)).write_text(json.dumps({params.report.metric: 2.5}))
    for folder in runs.glob("*/*/*/eval/*/*-*"):
        at_main = folder.name == paths.POINT.format(sampler=main[0], nfe=main[1])
        by = code("b", "2", "evaluate") if at_main else code("c", "3", "evaluate")
        (folder / "timing.json").write_text(json.dumps({"started": 0, "ended": 1, "code": by}))
    monkeypatch.setattr(write, "write_figure", lambda path, figure: path.write_bytes(b""))  # not drawn: fast

    written = write_report(params, runs, "reports", summary="s.json", plots="plots")
    on_disk = [p for top in ("reports", "plots") for p in Path(top).rglob("*") if p.is_file()]
    assert sorted(map(str, written)) == sorted(map(str, [*on_disk, Path("s.json")]))
    folder = Path("reports/digits")
    only_b = "- evaluation: bbbbbbbbbbbb, source 222222222222\n"
    for name in ("fid_vs_mimg.md", "ablation_m.md", "pretrained.md"):
        text = (folder / name).read_text()
        assert only_b in text and "warning" not in text, name
    text = (folder / "fid_vs_nfe.md").read_text()
    assert "cccccccccccc, source 333333333333" in text and "bbbbbbbbbbbb" in text
    assert "**warning**: the rows of fid_vs_nfe.md come from different evaluate code" in text
    assert "\n| NFE | edm |\n|---|---|\n| 15 | 2.50 |\n" in (folder / "pretrained.md").read_text()
    means = {
        (f"{r['variant']} {r['sampler']}", r["nfe"]): pytest.approx(float(r["mean"]))
        for r in csv_rows(folder / "fid_vs_nfe.csv")
    }
    plotted = csv_rows(Path("plots/fid_vs_nfe/digits.csv"))
    assert {(r["series"], r["nfe"]): float(r["fid"]) for r in plotted} == means


def test_versions_count_rows_by_code_whatever_the_key_order_of_their_records():
    """versions.json lists each distinct (training code, evaluation code) once with its number of rows: two
    rows whose records hold the same code with their keys in another order are one entry."""
    from fdm.report.write import _distinct_rows

    train = {"commit": "a" * 40, "dirty": False, "source_sha256": "1" * 64}
    evaluate = {"commit": "b" * 40, "dirty": False, "source_sha256": "2" * 64}
    reordered = {"source_sha256": "2" * 64, "dirty": False, "commit": "b" * 40}
    other = {**evaluate, "commit": "c" * 40}
    versions = {
        1: {"train": train, "evaluate": evaluate},
        2: {"evaluate": reordered, "train": dict(reversed(train.items()))},
        3: {"train": train, "evaluate": other},
    }
    rows = _distinct_rows(versions)
    assert [(r["evaluate"]["commit"][0], r["rows"]) for r in rows] == [("b", 2), ("c", 1)]
