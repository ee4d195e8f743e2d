"""Screenshots of the MLflow UI over a pipeline's runs, for docs/tracking.md: retake them with this.

It starts a real `mlflow server` on 127.0.0.1 over a project's store (``mlflow.db``, after `make run` or a
study), opens it in headless Chromium (Debian's ``chromium`` package, driven by Playwright) and saves:

- ``chart_view.png``: the experiment's chart view with the model runs only (``tags.fdm.kind = "model"``),
  filtered to the FID charts: FID over training (step = images seen) and over NFE (step = NFE), one chart
  per key, every model a line;
- ``compare_view.png``: the compare view of the model runs (params, metrics, and a metric's plot).

    apt-get install chromium && .venv/bin/pip install playwright
    .venv/bin/python bench/mlflow_screenshots.py --project . --out docs/tracking

Only 127.0.0.1 is contacted: Chromium starts without its background networking.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from fdm import paths

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(store: Path):
    """A real `mlflow server` on 127.0.0.1 over the sqlite store ``store``; yields its URL."""
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{store.resolve()}"]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def take(
    url: str, experiment: str, models: list[str], out: Path, chromium: str, width: int, height: int
) -> None:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})

        models_only = urllib.parse.quote('tags.`fdm.kind` = "model"')
        page.goto(f"{url}/#/experiments/{experiment}/runs?searchFilter={models_only}&compareRunsMode=CHART")
        page.get_by_text(f"{len(models)} matching runs").wait_for(timeout=120_000)
        assistant = page.get_by_label("Close", exact=True)
        if assistant.count():
            assistant.first.click()
        page.get_by_placeholder("Search metric charts").fill("fid_")
        # Every chart of the FID sections drawn (the legend's traces are there once its data came in).
        drawn = "document.querySelectorAll('.js-plotly-plot .scatterlayer .trace').length >= 3 * 6"
        page.wait_for_function(drawn, timeout=120_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(out / "chart_view.png"))

        runs = json.dumps(models)
        page.goto(f"{url}/#/compare-runs?runs={runs}&experiments={json.dumps([experiment])}")
        page.wait_for_timeout(4000)
        page.screenshot(path=str(out / "compare_view.png"))
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path("."), help="holds mlflow.db and out/<profile>/")
    parser.add_argument(
        "--profile", default="smoke", help="the profile whose out/<profile>/mlflow_runs.json to read"
    )
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--out", type=Path, default=Path("docs/tracking"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--size", default="1600x1100", help="browser window, WIDTHxHEIGHT")
    args = parser.parse_args()
    marker_path = args.project / paths.tracked(args.profile)
    marker = json.loads(marker_path.read_text())
    if not marker.get("logged"):
        raise SystemExit(f"{marker_path}: nothing was logged ({marker.get('reason')})")
    experiment = marker["experiments"][args.dataset]["id"]
    models = [m["run_id"] for key, m in marker["models"].items() if key.startswith(f"{args.dataset}/")]
    width, height = (int(n) for n in args.size.split("x"))
    with mlflow_server(args.project / "mlflow.db") as url:
        take(url, experiment, models, args.out, args.chromium, width, height)
    print(f"wrote {args.out / 'chart_view.png'} and {args.out / 'compare_view.png'}")


if __name__ == "__main__":
    main()
