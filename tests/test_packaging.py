"""A non-editable install works: the package ships its params schema and runs from site-packages.

The project is built and installed with pip (no -e, no dependencies: they are this environment's) into
a temporary folder, and `fdm train-config` runs from that copy, in another working directory.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fdm import names
from fdm.config import load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_runs_a_job_command(tmp_path):
    source, target = tmp_path / "source", tmp_path / "site-packages"
    for name in ("pyproject.toml", "README.md", "src"):  # what the build reads, so it writes nothing here
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    assert (target / "fdm" / "params.schema.yaml").is_file()
    script = "import fdm, sys; from fdm.cli import main; print(fdm.__file__, file=sys.stderr); main()"
    dest = tmp_path / "train.json"
    result = subprocess.run(
        [sys.executable, "-c", script, "train-config", "--params", str(ROOT / "params.yaml"), "--dataset",
         "digits", "--variant", "fdm_edm", "--train-seed", "0", "--dest", str(dest)],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == str(target / "fdm" / "__init__.py")  # the installed copy ran
    assert json.loads(dest.read_text()) == load_params(ROOT / "params.yaml").train_config(
        "digits", "fdm_edm", 0
    )
    # The installed package finds every formulation module: the registry agrees with fdm.names.
    probe = "import fdm.diffusion as d; print(d.__file__); print(' '.join(d.REGISTRY))"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    where, registered = result.stdout.splitlines()
    assert where == str(target / "fdm" / "diffusion" / "__init__.py") and registered.split() == list(
        names.BASES
    )
