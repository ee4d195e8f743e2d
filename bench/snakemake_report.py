"""Snakemake's HTML report of a finished run, opened in headless Chromium: every figure must render.

After `make run` (or any profile's run) in ``--project``, it runs ``snakemake --report report.html`` there
(with ``--configfile`` for a profile other than params.yaml), opens the file in headless Chromium (Debian's
``chromium`` package, driven by Playwright), opens the **Results** category and every file in it, and
checks that each PNG is drawn (an image of the file's name with a non-zero decoded size) and that each
file's caption is there (its information panel opens with "<file> of dataset <dataset>"; the report
offers CSVs as downloads, it does not draw them). It prints one line per file and saves ``snakemake_report.png``, the report showing the
first dataset's FID-vs-Mimg figure, for docs/pipeline.md:

    apt-get install chromium && .venv/bin/pip install playwright
    .venv/bin/python bench/snakemake_report.py --project . --out docs/pipeline

Exit status 1 when a file does not render. The page is a local file: nothing is contacted.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def build(project: Path, configfile: str | None) -> Path:
    """``snakemake --report report.html`` in ``project``; returns the report's path."""
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [str(snakemake), "--report", "report.html", "--cores", "1"]
    if configfile:
        command += ["--configfile", configfile]
    subprocess.run(command, cwd=project, check=True, capture_output=True)
    return project / "report.html"


def results(page, report: Path):
    """The report opened afresh at its Results category; returns the rows of its file list."""
    page.goto(report.resolve().as_uri())
    page.locator("nav a", has_text="Results").click()
    rows = page.locator("nav").first.locator("tbody tr")
    rows.first.wait_for()
    return rows


def check(report: Path, out: Path, chromium: str) -> list[tuple[str, str, str]]:
    """(dataset, file, what was seen) for every file of the Results category; saves the screenshot."""
    from playwright.sync_api import sync_playwright

    seen = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 760})
        rows = results(page, report)
        names = [(rows.nth(i).locator("td").nth(0).inner_text(), rows.nth(i).locator("td").nth(1).inner_text())
                 for i in range(rows.count())]  # fmt: skip
        for dataset, name in names:
            row = results(page, report).filter(has_text=name).filter(has_text=dataset).first
            what = []
            if name.endswith(".png"):
                row.locator("a[iconname=eye]").click()
                image = page.locator(f'img[src^="data:image/png"][src*="filename={name}"]')
                image.wait_for()
                width, height = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
                what.append(f"{width}x{height} image" if width and height else "not drawn")
            row.locator("a[iconname=information-circle]").click()
            caption = page.get_by_text(f"{name} of dataset {dataset}")
            what.append("caption" if caption.count() else "not captioned")
            seen.append((dataset, name, ", ".join(what)))
        first = next(dataset for dataset, name in names if name == "fid_vs_mimg.png")
        results(page, report).filter(has_text="fid_vs_mimg.png").filter(has_text=first).first.locator(
            "a[iconname=eye]"
        ).click()
        page.wait_for_timeout(500)
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "snakemake_report.png"))
        browser.close()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    parser.add_argument("--configfile", help="the profile of the run (default: params.yaml)")
    parser.add_argument("--out", type=Path, default=Path("docs/pipeline"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    report = build(args.project, args.configfile)
    seen = check(report, args.out, args.chromium)
    writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    writer.writerow(["dataset", "file", "seen"])
    writer.writerows(seen)
    failed = [row for row in seen if "not " in row[2]]
    print(
        f"{len(seen) - len(failed)} of {len(seen)} files render; screenshot {args.out / 'snakemake_report.png'}"
    )
    return 1 if failed or not seen else 0


if __name__ == "__main__":
    sys.exit(main())
