"""`fdm report`: records, tables from synthetic records whose answers are known, and the command end to end.

The speedup definition itself, on curves: tests/test_report_speedup.py.
"""

import csv
import dataclasses
import json
import math
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
from fdm.report.ablation import difference
from fdm.report.cli import report
from fdm.report.figures import line_styles
from fdm.report.records import Record, Stat, aggregate, read_records, t_interval
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
    assert (edm["speedup"], edm["status"]) == (2.0, "reached")
    assert vp["reached"] == pytest.approx(20.0) and vp["first"] == 30 and vp["speedup"] == pytest.approx(2.0)
    assert (ve["reached"], ve["speedup"], ve["status"]) == (None, None, "not reached")
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
    assert row["baseline_reached"] == pytest.approx(30.0)
    assert row["speedup"] == pytest.approx(30.0 / 20.0)


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
    crossing = 5 + (2.6 - 2.4) / (2.6 - 2.3) * 4
    assert (row["baseline_at"], row["target"], row["baseline_reached"], row["first"]) == (25, 2.4, 15, 9)
    assert row["reached"] == pytest.approx(crossing)
    assert row["speedup"] == pytest.approx(15 / crossing)
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


def test_bootstrap_interval_contains_the_true_ratio_within_closed_form_bounds():
    """Baseline 10 - 0.2 k + c, FDM 10 - 0.4 k + d: with seed means c, d the ratio is 40 / (20 + 2.5 (d - c))."""
    offsets = (-0.1, 0.0, 0.1)
    recs = linear_seeds("edm", 0.2, offsets) + linear_seeds("fdm_edm", 0.4, offsets)
    row = speedup_rows(recs, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)[0]
    assert (row["target"], row["reached"], row["speedup"]) == (
        pytest.approx(2.0),
        pytest.approx(20.0),
        pytest.approx(2.0),
    )
    assert 40 / 20.5 - 1e-9 <= row["ci_low"] < 2.0 < row["ci_high"] <= 40 / 19.5 + 1e-9
    assert (row["not_reached_share"], row["n_baseline"], row["n_fdm"]) == (0.0, 3, 3)
    same = linear_seeds("edm", 0.2, (0.0,) * 3) + linear_seeds("fdm_edm", 0.4, (0.0,) * 3)
    row = speedup_rows(same, "d", {"fdm_edm": "edm"}, ("heun", 15), 40)[0]
    assert row["ci_low"] == pytest.approx(2.0) and row["ci_high"] == pytest.approx(
        2.0
    )  # collapses to a point


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
    crossing = 50000 + (2.73 - 2.37) / (2.73 - 2.05) * 50000
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
    """Synthetic runs for the profile, ``fdm report`` twice (byte-identical files), the report folder."""
    write_runs(tmp_path / "runs", load_params(params_path), value)
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


def test_report_command_end_to_end_one_seed(tmp_path):
    folder = run_report(tmp_path, ROOT / "params.yaml", smoke_value)
    speedup = (folder / "speedup.csv").read_text().splitlines()
    # FDM is at the target at its first snapshot: credited with it, a lower bound; one seed: no interval.
    assert (
        speedup[1] == "kimg,fdm_edm,edm,heun,20,2.133333,20,10,10,2.000000,,,,1,1,reached at first point,,,"
    )
    mimg = (folder / "fid_vs_mimg.md").read_text()
    assert "| 0.01 | 4.13 | 2.13 |" in mimg and "(paper" not in mimg and "(n=1)" in mimg
    assert "| ≥ 2.00x | n=1: none | 1/1 |" in (folder / "speedup.md").read_text()
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


def test_report_study_profile_three_seeds(tmp_path):
    folder = run_report(tmp_path, ROOT / "config" / "study.yaml", study_value)
    rows = {(r["measure"], r["sampler"], r["variant"]): r for r in csv_rows(folder / "speedup.csv")}
    expected = {("kimg", "heun"): 40 / 20, ("nfe", "heun"): 35 / 11, ("nfe", "dpmpp_3s"): 25 / 8}
    assert len(rows) == 3 * len(expected)
    for (measure, sampler, variant), row in rows.items():
        ratio = expected[measure, sampler]
        assert float(row["speedup"]) == pytest.approx(ratio, abs=1e-6), (measure, sampler, variant)
        assert float(row["ci_low"]) <= ratio <= float(row["ci_high"])
        assert (row["n_baseline"], row["n_fdm"], row["status"]) == ("3", "3", "reached")
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


def test_paper_profile_our_numbers_equal_to_the_paper_give_the_paper_speedups(tmp_path):
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
    write_report(params, tmp_path / "runs", tmp_path / "reports")
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
def test_fdm_report_is_registered_and_fails_with_one_line(tmp_path):
    from fdm.cli import main

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


def test_difference_is_welchs_interval():
    """The ablation's variant-less-baseline interval is Welch's t interval, as scipy's unequal-variance t test
    gives it from the raw values; one seed on a side leaves the difference without an interval."""
    a, b = [10.0, 12.5, 17.0, 11.0], [8.0, 8.4, 9.1]
    stat = {k: Stat(float(np.mean(v)), float(np.std(v, ddof=1)), len(v)) for k, v in (("a", a), ("b", b))}
    delta, low, high = difference(stat["a"], stat["b"])
    welch = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert delta == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((welch.low, welch.high), rel=1e-9)
    student = scipy_stats.ttest_ind(a, b, equal_var=True).confidence_interval(0.95)
    assert abs(low - student.low) > 0.01  # unequal spreads: not the pooled interval
    assert difference(stat["a"], Stat(9.0, None, 1)) == (pytest.approx(np.mean(a) - 9.0), None, None)
    assert difference(None, stat["b"]) == (None, None, None)


def test_ablation_axes_table_and_figure(tmp_path):
    """config/ablation.yaml: per axis, the final metric of each variant against its setting's value (read
    from the profile), beside its baseline's; the multiplier axis below has a known mean per variant."""
    params = load_params(ROOT / "config" / "ablation.yaml")
    final = {"fdm_edm_m05": 30.0, "fdm_edm_m1": 20.0, "fdm_edm": 10.0, "fdm_edm_m4": 40.0, "edm": 8.0}

    def value(dataset, variant, seed, kimg, sampler, nfe):
        at_end = final.get(variant, 50.0) + (seed - 1)  # seeds 0, 1, 2: mean final[variant], sd 1
        return at_end if kimg == params.duration_kimg else at_end + 100.0 / kimg

    write_runs(tmp_path / "runs", params, value)
    written = {p.name for p in write_report(params, tmp_path / "runs", tmp_path / "reports")}
    assert {
        f"ablation_{a}.{x}" for a in ("multiplier", "warmup", "cin") for x in ("csv", "md", "png")
    } <= written
    with open(tmp_path / "reports" / "digits" / "ablation_multiplier.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(float(r["value"]), r["variant"]) for r in rows] == [
        (0.5, "fdm_edm_m05"), (1.0, "fdm_edm_m1"), (2.0, "fdm_edm"), (4.0, "fdm_edm_m4")
    ]  # fmt: skip
    half = 4.302653 / math.sqrt(3)  # t_{0.975, 2} * sd / sqrt(n)
    for r in rows:
        assert float(r["mean"]) == pytest.approx(final[r["variant"]])
        assert float(r["ci_high"]) - float(r["mean"]) == pytest.approx(half, rel=1e-5)
        assert (r["baseline"], float(r["baseline_mean"]), r["n"]) == ("edm", 8.0, "3")
        # Welch: equal sds (1) and n (3): se = sqrt(2/3), 4 degrees of freedom, t_{0.975, 4} = 2.776445
        assert float(r["difference"]) == pytest.approx(final[r["variant"]] - 8.0)
        welch = 2.776445 * math.sqrt(2 / 3)
        assert float(r["difference_ci_high"]) - float(r["difference"]) == pytest.approx(welch, rel=1e-5)
        assert float(r["difference"]) - float(r["difference_ci_low"]) == pytest.approx(welch, rel=1e-5)
    cin = (tmp_path / "reports" / "digits" / "ablation_cin.md").read_text()
    assert "| scale | fdm_vp_scale | fdm_vp | 50.00 [" in cin and "| vp | 50.00 [" in cin
    assert (
        "| replace | fdm_edm | fdm_edm | 10.00 [7.52, 12.48] | edm | 8.00 [5.52, 10.48] | +2.00 [-0.267, 4.27] |"
        in cin
    )
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
    timing.json (``evaluation_code(variant)``) and each snapshot's evaluated.json citing its metrics."""
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
                points[f"{sampler}-{nfe}"] = {"metrics_sha256": file_sha256(folder / "metrics.json")}
            Path(paths.evaluated(run, kimg)).write_text(json.dumps({"points": points}))


def test_a_metrics_file_that_differs_from_its_evaluation_record_is_refused_and_nothing_written(tmp_path):
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
        str(tmp_path / "out"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    line = result.output.strip()
    assert line.startswith(f"fdm: error: {metrics} has SHA-256 {file_sha256(metrics)}, but ")
    assert recorded in line and "\n" not in line
    assert not (tmp_path / "out").exists()


def test_each_table_names_the_code_of_its_rows_and_warns_when_it_differs(tmp_path):
    params = load_params(ROOT / "params.yaml")
    runs = tmp_path / "runs"
    write_runs(runs, params, smoke_value)
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
    assert len(warnings) == 3  # fid_vs_mimg, fid_vs_nfe, speedup: one line each
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


def test_every_formulation_is_paired_with_its_base_and_has_its_family_colour(tmp_path):
    """A profile training every formulation of fdm.names: the report measures each FDM variant against
    its base, and plots each family in its own colour (not the grey of an unknown one), FDM dashed."""
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
