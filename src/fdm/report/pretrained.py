"""The released checkpoints' evaluations beside the paper's numbers: ``reports/<dataset>/pretrained.{csv,md}``.

For each checkpoint of the profile's ``pretrained`` list (``runs/<dataset>/<formulation>/pretrained/``,
evaluated at the final milestone with the final snapshot's plan) and each point of that plan: our value
of the report metric and, with ``report.compare_paper`` and the paper's metric, the paper's number for
that formulation, sampler and NFE at 200 Mimg (its FID-vs-training table at the main sampler and NFE,
its FID-vs-NFE tables otherwise), and the difference. One run per checkpoint: no interval.
"""

from __future__ import annotations

import os

from fdm import paths
from fdm.config import Params
from fdm.report.records import point_values
from fdm.report.tables import markdown_table, number, to_csv

PRETRAINED_COLUMNS = ("formulation", "url", "kimg", "sampler", "nfe", "value", "paper", "difference")


def pretrained_rows(
    params: Params, runs: str | os.PathLike, dataset: str, metric: str, paper_mimg: dict, paper_nfe: dict
) -> list[dict]:
    """One row per (checkpoint, point) of ``dataset`` that has been evaluated, in profile order."""
    kimg, main = params.duration_kimg, params.eval.main[dataset]
    rows = []
    for entry in (e for e in params.pretrained if e.dataset == dataset):
        run_dir = paths.pretrained(dataset, entry.formulation, root=str(runs))
        for (sampler, nfe), value in point_values(
            run_dir, kimg, params.points(dataset, kimg), metric
        ).items():
            if (sampler, nfe) == (main.sampler, main.nfe):
                paper = paper_mimg.get(entry.formulation, {}).get(kimg)
            else:
                paper = paper_nfe.get(sampler, {}).get(entry.formulation, {}).get(nfe)
            rows.append(
                {
                    "formulation": entry.formulation, "url": entry.url, "kimg": kimg, "sampler": sampler,
                    "nfe": nfe, "value": value, "paper": paper,
                    "difference": None if paper is None else value - paper,
                }
            )  # fmt: skip
    return rows


def pretrained_markdown(rows: list[dict], dataset: str, metric: str, notes=()) -> str:
    """One table per sampler: a row per NFE, a column per checkpoint: ours (the paper's)."""
    kimg = rows[0]["kimg"]
    lines = [
        f"# {dataset}: the released checkpoints, {metric}",
        "",
        f"The authors' checkpoints at {kimg / 1000:g} Mimg, imported (`fdm import-checkpoint`) and evaluated with "
        "this profile's protocol; one run each, so no interval. The paper's number in parentheses where it "
        "reports one." + "".join(f" {note}" for note in notes),
    ]
    formulations = list(dict.fromkeys(r["formulation"] for r in rows))
    for sampler in dict.fromkeys(r["sampler"] for r in rows):
        cells = {(r["nfe"], r["formulation"]): r for r in rows if r["sampler"] == sampler}
        body = []
        for nfe in sorted({nfe for nfe, _ in cells}):
            line = [str(nfe)]
            for formulation in formulations:
                r = cells.get((nfe, formulation))
                paper = "" if r is None or r["paper"] is None else f" ({number(r['paper'])})"
                line.append("" if r is None else number(r["value"]) + paper)
            body.append(line)
        lines += ["", f"## {sampler}", ""] + markdown_table(["NFE", *formulations], body)
    return "\n".join(lines) + "\n"


def pretrained_csv(rows: list[dict]) -> str:
    return to_csv(rows, PRETRAINED_COLUMNS)
