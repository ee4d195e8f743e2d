"""`fdm report`: tables from synthetic records whose answers are known, and the command end to end."""

import dataclasses
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from fdm import paper_results
from fdm.config import load_params
from fdm.errors import FdmError
from fdm.report import (
    Record,
    aggregate,
    fid_vs_mimg_rows,
    fid_vs_nfe_rows,
    first_reach,
    read_records,
    report,
    speedup_rows,
    to_csv,
    write_report,
)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("edm", "fdm_edm", "vp", "fdm_vp", "ve", "fdm_ve")


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


def test_first_reach():
    curve = {10: 5.0, 20: 3.0, 40: 1.0}
    assert first_reach(curve, 3.0, interpolate=True) == 20
    assert first_reach(curve, 2.0, interpolate=True) == pytest.approx(30.0)
    assert first_reach(curve, 2.0, interpolate=False) == 40
    assert first_reach(curve, 6.0, interpolate=True) == 10  # never extrapolated before the first point
    assert first_reach(curve, 0.5, interpolate=True) is None


def test_aggregate_over_training_seeds():
    stats = aggregate(records("d", "edm", {10: 1.0}, seed=0) + records("d", "edm", {10: 3.0}, seed=1))
    stat = stats[("d", "edm", 10, "heun", 15)]
    assert (stat.mean, stat.n) == (2.0, 2)
    assert stat.std == pytest.approx(math.sqrt(2.0))
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
    rows = by_variant(speedup_rows(aggregate(recs), "d", VARIANTS, ("heun", 15), 40), "kimg")
    edm, vp, ve = rows["heun", "fdm_edm"], rows["heun", "fdm_vp"], rows["heun", "fdm_ve"]
    assert (edm["baseline_at"], edm["target"], edm["reached"], edm["speedup"], edm["status"]) == (
        40,
        2.0,
        20,
        2.0,
        "reached",
    )
    assert vp["reached"] == pytest.approx(20.0) and vp["first"] == 30 and vp["speedup"] == pytest.approx(2.0)
    assert (ve["reached"], ve["speedup"], ve["status"]) == (None, None, "not reached")


def test_sampling_speedup_known_answers():
    recs = (
        records("d", "edm", {5: 3.0, 9: 2.5, 15: 2.4, 25: 2.45}, kimg=40)  # best 2.4 at NFE 15
        + records("d", "fdm_edm", {5: 2.6, 9: 2.3, 15: 2.2}, kimg=40)  # reaches it at NFE 9
        + records("d", "fdm_edm", {5: 1.0}, kimg=20)  # not the final snapshot: ignored
    )
    rows = speedup_rows(aggregate(recs), "d", ("edm", "fdm_edm"), ("heun", 15), 40)
    row = by_variant(rows, "nfe")["heun", "fdm_edm"]
    assert (row["baseline_at"], row["target"], row["reached"]) == (15, 2.4, 9)
    assert row["speedup"] == pytest.approx(15 / 9)
    assert [r["measure"] for r in rows] == ["kimg", "nfe"]  # no vp/ve pairs: variants not in the profile


def test_missing_baseline_and_missing_runs():
    recs = records("d", "fdm_edm", {10: 1.0}) + records("d", "vp", {10: 1.0})
    rows = by_variant(speedup_rows(aggregate(recs), "d", VARIANTS, ("heun", 15), 10), "kimg")
    assert rows["heun", "fdm_edm"]["status"] == "no baseline runs"
    assert rows["heun", "fdm_vp"]["status"] == "no runs"


def test_paper_speedups_from_the_paper_tables():
    """paper.md 3.3: AFHQv2 EDM-FDM passes EDM's 200-Mimg FID between 50 and 100 Mimg; NFE 25 beats 79."""
    mimg, nfe = paper_results.fid_vs_kimg("afhqv2"), paper_results.fid_vs_nfe("afhqv2")
    rows = speedup_rows({}, "afhqv2", VARIANTS, ("heun", 79), 200000, mimg, nfe)
    training = by_variant(rows, "kimg")["heun", "fdm_edm"]
    crossing = 50000 + (2.73 - 2.37) / (2.73 - 2.05) * 50000
    assert training["paper_reached"] == pytest.approx(crossing)
    assert training["paper_speedup"] == pytest.approx(200000 / crossing)
    assert training["status"] == "no baseline runs"  # ours: nothing recorded
    for sampler in ("heun", "dpmpp_3s"):
        for variant in ("fdm_edm", "fdm_vp", "fdm_ve"):
            assert by_variant(rows, "nfe")[sampler, variant]["paper_speedup"] == pytest.approx(79 / 25)
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


# On disk and through the command ------------------------------------------------------------------------------


def write_runs(runs: Path, params, value) -> None:
    """A metrics.json for every evaluation the profile asks for, with value(dataset, variant, seed, kimg, sampler, nfe)."""
    for dataset, variant, seed in params.models():
        for kimg, sampler, nfe in params.eval_points(dataset):
            path = (
                runs
                / dataset
                / variant
                / f"s{seed}"
                / "eval"
                / str(kimg)
                / f"{sampler}-{nfe}"
                / "metrics.json"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            fid = value(dataset, variant, seed, kimg, sampler, nfe)
            metrics = {name: fid for name in params.eval.metric_names()}
            path.write_text(
                json.dumps({**metrics, "num_samples": 300, "sampler": sampler, "nfe": nfe, "kimg": kimg})
            )


def smoke_value(dataset, variant, seed, kimg, sampler, nfe):
    """FDM reaches the baseline's final value (at 20 kimg) at 10 kimg; all samplers alike."""
    return (4.0 if kimg == 10 else 2.0) + (-2.0 if variant.startswith("fdm_") else 0.0) + 2.0 / nfe


def test_report_command_end_to_end(tmp_path):
    params_path = ROOT / "params.yaml"
    write_runs(tmp_path / "runs", load_params(params_path), smoke_value)
    args = [
        "report",
        "--params",
        str(params_path),
        "--runs",
        str(tmp_path / "runs"),
        "--out",
        str(tmp_path / "reports"),
    ]
    result = CliRunner().invoke(report, args[1:])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / "digits"
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(
        f"{s}.{e}" for s in ("fid_vs_mimg", "fid_vs_nfe") for e in ("csv", "md", "png")
    ) + [
        "speedup.csv",
        "speedup.md",
    ]
    first = {name: (folder / name).read_bytes() for name in names if not name.endswith(".png")}
    assert CliRunner().invoke(report, args[1:]).exit_code == 0
    assert first == {name: (folder / name).read_bytes() for name in first}  # byte-identical rerun
    speedup = (folder / "speedup.csv").read_text().splitlines()
    assert speedup[1].startswith("kimg,fdm_edm,edm,heun,20,2.133333,10,10,2.000000,reached,")
    mimg = (folder / "fid_vs_mimg.md").read_text()
    assert "| 0.01 | 4.13 | 2.13 |" in mimg and "(paper" not in mimg
    assert (folder / "fid_vs_mimg.png").read_bytes()[:4] == b"\x89PNG"


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
    runs = tmp_path / "runs"
    path = runs / "digits" / "edm" / "s0" / "eval" / "10" / "heun-15" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(FdmError, match=r"heun-15/metrics.json: not readable JSON"):
        read_records(runs, "fid_digitsnet")
    path.write_text(json.dumps({"kid_digitsnet": 0.1}))
    with pytest.raises(FdmError, match=r"metrics.json: no 'fid_digitsnet' \(found: kid_digitsnet\)"):
        read_records(runs, "fid_digitsnet")
    path.write_text(json.dumps({"fid_digitsnet": float("nan")}))
    with pytest.raises(FdmError, match=r"metrics.json: fid_digitsnet is nan, not a finite number"):
        read_records(runs, "fid_digitsnet")
    path.write_text(json.dumps({"fid_digitsnet": 2.0}))
    other = runs / "mnist" / "edm" / "s0" / "eval" / "10" / "heun-15" / "metrics.json"
    other.parent.mkdir(parents=True)
    other.write_text(json.dumps({"fid_digitsnet": 1.0}))
    assert [r.dataset for r in read_records(runs, "fid_digitsnet")] == ["digits", "mnist"]


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
