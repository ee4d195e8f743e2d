"""`fdm compare`: any two variants of a report, paired by training seed, from its ``per_seed.csv``.

``fdm report`` pairs each FDM variant with its own base (``paired.md``). A question across families,
such as FDM-EDM against flow matching at the same budget, is the same statistic over another pair of
variants that share their training seeds: per seed i, d_i = value(variant, i) - value(other, i), its
mean, the 95% Student-t interval and the sign count (``fdm.report.paired``; docs/report.md, "Paired
differences"). The values come from the report's ``per_seed.csv``, so the comparison needs no run
folder and uses exactly the numbers of the report beside it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click

from fdm.atomic import atomic_write_text
from fdm.errors import FdmError
from fdm.report.paired import PAIRED_COLUMNS, paired_markdown, paired_rows
from fdm.report.records import PER_SEED_COLUMNS
from fdm.report.tables import to_csv


def read_per_seed(path: Path) -> tuple[str, dict[tuple, dict[int, float]]]:
    """The metric and {(variant, kimg, sampler, nfe): {training seed: value}} of a ``per_seed.csv``."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if reader.fieldnames != list(PER_SEED_COLUMNS):
                raise FdmError(f"{path}: not a per_seed.csv (columns {', '.join(PER_SEED_COLUMNS)})")
            rows = list(reader)
    except OSError as err:
        raise FdmError(f"{path}: {err.strerror}") from None
    try:
        values: dict[tuple, dict[int, float]] = {}
        for row in rows:
            key = (row["variant"], int(row["kimg"]), row["sampler"], int(row["nfe"]))
            values.setdefault(key, {})[int(row["train_seed"])] = float(row["value"])
    except ValueError as err:
        raise FdmError(f"{path}: a malformed row ({err})") from None
    metrics = {row["metric"] for row in rows}
    if len(metrics) != 1:
        raise FdmError(f"{path}: expected one metric, found {len(metrics)}")
    return metrics.pop(), values


def compare_rows(values: dict[tuple, dict[int, float]], variant: str, other: str) -> list[dict]:
    """``paired_rows`` of ``variant`` against ``other``: at every snapshot on the main sampler and NFE
    (the point every snapshot was evaluated at), then at every other point of the final snapshot."""
    present = sorted({key[0] for key in values})
    for name in (variant, other):
        if name not in present:
            raise FdmError(f"no variant {name!r} in the report; it has {', '.join(present)}")
    kimgs = sorted({kimg for (v, kimg, _, _) in values if v == variant})
    shared = set.intersection(
        *({(s, n) for (v, k, s, n) in values if (v, k) == (variant, kimg)} for kimg in kimgs)
    )
    if len(shared) != 1:
        raise FdmError(f"{variant}: no single sampler and NFE evaluated at every snapshot")
    keyed = {("", *key): seeds for key, seeds in values.items()}
    return paired_rows(keyed, "", {variant: other}, shared.pop(), kimgs, kimgs[-1])


@click.command("compare")
@click.argument("per_seed", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("variant")
@click.argument("other")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the table here (.md)."
)
def compare_command(per_seed: Path, variant: str, other: str, out: Path | None) -> None:
    """Two variants of a report paired by training seed (VARIANT less OTHER), from its PER_SEED csv.

    Prints a Markdown table: at every snapshot, and at every sampler and NFE of the final one, the
    mean difference over the seeds both have, its 95% Student-t interval and the sign count. With
    --out FILE.md, also writes it there and the rows to FILE.csv.
    """
    metric, values = read_per_seed(per_seed)
    rows = compare_rows(values, variant, other)
    dataset = per_seed.resolve().parent.name
    notes = [f"Values: {per_seed.name}. Exploratory unless the profile pre-registered this pair."]
    text = paired_markdown(rows, dataset, metric, [variant], notes, what=f"{variant} against {other}")
    click.echo(text, nl=False)
    if out is not None:
        atomic_write_text(out, text)
        atomic_write_text(out.with_suffix(".csv"), to_csv(rows, PAIRED_COLUMNS))
