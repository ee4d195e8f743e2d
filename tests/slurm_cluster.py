"""A real single-node Slurm cluster on 127.0.0.1, in a temporary folder, for the cluster-path test.

munged, slurmctld and slurmd from Debian's packages (slurmctld slurmd slurm-client munge) run with a
configuration, state, logs and sockets all under one new folder; nothing under /etc is written (the
package's /etc/munge/munge.key is read). ``slurm_cluster()`` yields once the node is idle and, on the
way out, also when the test failed, cancels every job, stops the three daemons by the PIDs in their
pid files and checks that no process it started (daemons, job steps, jobs) is left.

Facts and pitfalls: ../shared/reference/slurm.md and docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SKIP_REASON = "install slurmctld slurmd slurm-client munge (Debian) to run it; .ci/run does"
DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ["sbatch", "squeue", "scancel", "sinfo", "srun"]
MUNGE_KEY = Path("/etc/munge/munge.key")


def missing() -> str | None:
    """Why the cluster cannot start here (a pytest skip reason), or None."""
    absent = [path for path in DAEMONS.values() if not os.access(path, os.X_OK)]
    absent += [name for name in CLIENTS if shutil.which(name) is None]
    if absent or not MUNGE_KEY.exists():
        return f"no {', '.join(absent) or MUNGE_KEY}: {SKIP_REASON}"
    if os.geteuid() != 0:
        return "the single-node Slurm runs its daemons as root and munge; run the test as root (.ci/run does)"
    return None


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    env: dict[str, str]  # the environment of Slurm clients and of the jobs they submit

    def run(self, *args: str) -> str:
        return subprocess.run(args, env=self.env, capture_output=True, text=True, check=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, node: str, cpus: int, memory_mb: int, gpus: int) -> str:
    """One node in partitions ``cpu`` (the default) and ``gpu``, the names workflow/profiles/slurm uses.

    ``config_overrides`` makes the node advertise ``cpus``, ``memory_mb`` and ``gpus`` whatever the
    machine has, so the profile's real requests (--mem, --cpus-per-gpu, --gpus) schedule; without
    cgroups nothing enforces them. The GPUs are empty files named in gres.conf. MinJobAge stays far
    above 3x the test's --slurm-init-seconds-before-status-checks (or the plugin goes back to sacct,
    which fails without accounting) and above the test's length, which lists every job at its end.
    """
    settings = {
        "ClusterName": "fdmtest",
        "SlurmctldHost": f"{node}(127.0.0.1)",
        "SlurmUser": "root",
        "SlurmdUser": "root",
        "SlurmctldPort": free_port(),
        "SlurmdPort": free_port(),
        "AuthType": "auth/munge",
        "CredType": "cred/munge",
        "AuthInfo": f"socket={root}/munge/munge.socket.2",
        "StateSaveLocation": f"{root}/state/ctld",
        "SlurmdSpoolDir": f"{root}/state/d",
        "SlurmctldPidFile": f"{root}/run/slurmctld.pid",
        "SlurmdPidFile": f"{root}/run/slurmd.pid",
        "SlurmctldLogFile": f"{root}/log/slurmctld.log",
        "SlurmdLogFile": f"{root}/log/slurmd.log",
        "SlurmdParameters": "config_overrides",
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SelectType": "select/cons_tres",
        "SelectTypeParameters": "CR_Core_Memory",
        "SchedulerType": "sched/backfill",
        "AccountingStorageType": "accounting_storage/none",
        "JobAcctGatherType": "jobacct_gather/none",
        "JobCompType": "jobcomp/none",
        "MpiDefault": "none",
        "ReturnToService": 2,
        "SlurmctldTimeout": 30,
        "SlurmdTimeout": 30,
        "InactiveLimit": 0,
        "MinJobAge": 3600,  # the test lists every job of both runs at the end
        "GresTypes": "gpu",
        "KillWait": 5,
        "Waittime": 0,
    }
    lines = [f"{key}={value}" for key, value in settings.items()]
    lines += [
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus}"
        f" ThreadsPerCore=1 RealMemory={memory_mb} Gres=gpu:{gpus} State=UNKNOWN",
        f"PartitionName=cpu Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=gpu Nodes={node} MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def read_pid(path: Path, timeout: float = 20) -> int:
    """The PID a daemon wrote to ``path`` once it daemonized."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            return int(path.read_text().split()[0])
        time.sleep(0.1)
    raise RuntimeError(f"{path} did not appear within {timeout:.0f} s")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def stop(pid: int, timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def describe(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return "?"


def started_here(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (our SLURM_CONF): the daemons, job steps and jobs."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return [pid for pid in found if alive(pid)]


def log_tails(root: Path, lines: int = 8) -> str:
    logs = [root / "munge/munged.log", *sorted((root / "log").glob("*.log"))]
    return "\n".join(
        f"{log.name}: ..." + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        for log in logs
        if log.exists()
    )


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def slurm_cluster(cpus: int = 24, memory_mb: int = 131072, gpus: int = 2) -> Iterator[SlurmCluster]:
    """Bring up munged, slurmctld and slurmd; always tear them down by PID and check nothing is left.

    24 CPUs fit a training job of the Slurm profile on 2 GPUs (2 x 8 CPUs) next to the CPU jobs.
    """
    root = Path(tempfile.mkdtemp(prefix="fdm-slurm-"))
    root.chmod(0o755)  # munged runs as munge and must reach its folder
    conf = root / "etc" / "slurm.conf"
    marker = f"SLURM_CONF={conf}"
    for sub in ("etc", "log", "run", "state/ctld", "state/d", "munge", "bin"):
        (root / sub).mkdir(parents=True)
    shutil.chown(root / "munge", "munge", "munge")
    node = socket.gethostname().split(".")[0]
    conf.write_text(slurm_conf(root, node, cpus, memory_mb, gpus))
    # Stand-ins for device files: slurmd counts a GPU per file; torch in the jobs still sees no CUDA.
    devices = [root / "dev" / f"gpu{i}" for i in range(gpus)]
    for device in devices:
        device.parent.mkdir(exist_ok=True)
        device.touch()
    (root / "etc" / "gres.conf").write_text(
        "".join(f"NodeName={node} Name=gpu File={device}\n" for device in devices)
    )
    # Inside a job the jobstep plugin clears SLURM_CONF before its inner srun: a wrapper first on PATH
    # puts it back (the alternative, a link at /etc/slurm/slurm.conf, would touch the machine).
    srun = root / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF={conf} exec {shutil.which("srun")} "$@"\n')
    srun.chmod(0o755)
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    cluster = SlurmCluster(root, env)
    pid_files = [root / "run/slurmd.pid", root / "run/slurmctld.pid", root / "munge/munged.pid"]
    try:
        try:
            munge = root / "munge"
            subprocess.run(
                ["runuser", "-u", "munge", "--", DAEMONS["munged"], "-S", f"{munge}/munge.socket.2",
                 f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log", f"--seed-file={munge}/munged.seed"],
                env=env, check=True, timeout=30,
            )  # fmt: skip
            read_pid(munge / "munged.pid")
            subprocess.run([DAEMONS["slurmctld"], "-i"], env=env, check=True, timeout=30)
            read_pid(root / "run/slurmctld.pid")
            subprocess.run([DAEMONS["slurmd"]], env=env, check=True, timeout=30)
            read_pid(root / "run/slurmd.pid")
            wait_until(
                lambda: subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True)
                .stdout.split() == ["idle"],  # both partitions, one line
                timeout=60, what="the node did not come up idle",
            )  # fmt: skip
        except (RuntimeError, subprocess.SubprocessError) as err:
            raise RuntimeError(f"{err}; the end of the daemons' logs:\n{log_tails(root)}") from err
        yield cluster
    finally:
        try:
            if (root / "run/slurmctld.pid").exists():
                subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30)
                with contextlib.suppress(RuntimeError):
                    wait_until(
                        lambda: not subprocess.run(
                            ["squeue", "-h", "-t", "PD,R,CG"], env=env, capture_output=True, text=True
                        ).stdout.strip(),
                        timeout=60, what="jobs left",
                    )  # fmt: skip
            for pid_file in pid_files:
                with contextlib.suppress(FileNotFoundError, ValueError):
                    stop(int(pid_file.read_text().split()[0]))
            # Job processes outlive slurmd when scancel was too slow (a loaded machine): stop them too.
            for pid in started_here(marker):
                stop(pid, timeout=5)
            left = {pid: describe(pid) for pid in started_here(marker)}
            assert not left, f"processes of the test's Slurm still running after tear-down: {left}"
        finally:
            shutil.rmtree(root, ignore_errors=True)
