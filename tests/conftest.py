"""Shared test settings: CPU only, a fixed thread count so float reductions are repeatable.

The count is 2, or FDM_TEST_THREADS where set: the mutation run (bench/mutation.py) sets 1, because it
forks its test workers from a process that ran the tests, and a child forked from a process whose
OpenMP (libgomp) pool has threads hangs in its next parallel region (for example MKL's exp).

The mutation run also sets FDM_TEST_FORKED=1: then tqdm's write lock is a thread lock of each process.
tqdm's default one is a multiprocessing semaphore shared by every process forked after it was made, and
a forked test worker killed at mutmut's time limit while holding it (each tqdm bar takes it when made)
leaves every later worker waiting for it forever.

OMP_WAIT_POLICY=PASSIVE stops idle OpenMP threads from spinning: with several test processes on a
2-core machine, spinning threads slowed small torch calls 10-100x. Subprocesses inherit it.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402  (after the environment above)

torch.set_num_threads(int(os.environ.get("FDM_TEST_THREADS", "2")))
if os.environ.get("FDM_TEST_FORKED") == "1":
    import threading

    from tqdm import tqdm

    tqdm.set_lock(threading.RLock())


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny tensors, where a second thread only adds contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def project_outputs_untouched():
    """No test writes pipeline outputs into the checkout itself: a command run with the project's root as
    its working directory would claim out/<name>/ there (run such tests in a temporary folder)."""
    from pathlib import Path

    out = Path(__file__).resolve().parents[1] / "out"
    before = sorted(out.rglob("*")) if out.exists() else []
    yield
    after = sorted(out.rglob("*")) if out.exists() else []
    assert after == before, f"tests wrote into {out}: {sorted(set(after) - set(before))[:5]}"
