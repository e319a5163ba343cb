"""The local one-node SLURM cluster (slurm/start-cluster.sh) for tests that submit real jobs.

Tests take the session fixture `slurm_cluster` (registered in tests/conftest.py). It starts
the cluster in ${MHGD_SLURM_DIR:-/tmp/mhgd-slurm} unless it is already up, exports SLURM_CONF
for the session so submitit's sbatch/sacct calls reach it, and stops the cluster at the end
only if this session started it. When SLURM cannot be started (not root, no apt, a daemon
fails) the tests are skipped with the script's own explanation; MHGD_SLURM_REQUIRED=1 turns
that skip into a failure, for CI machines where SLURM must work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import submitit

REPO_ROOT = Path(__file__).resolve().parent.parent
START_SCRIPT = REPO_ROOT / "slurm" / "start-cluster.sh"
STOP_SCRIPT = REPO_ROOT / "slurm" / "stop-cluster.sh"
DEFAULT_STATE_DIR = Path("/tmp/mhgd-slurm")
# A first start may install the Debian packages (~10 s here, longer on a slow mirror);
# afterwards a start takes a few seconds.
START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120


@dataclass(frozen=True)
class SlurmCluster:
    state_dir: Path
    env: dict[str, str]
    # False when it was already up: whoever started it decides when it stops.
    started_now: bool


def state_dir() -> Path:
    return Path(os.environ.get("MHGD_SLURM_DIR") or DEFAULT_STATE_DIR)


def _cluster_env(directory: Path) -> dict[str, str]:
    return {"SLURM_CONF": str(directory / "slurm.conf")}


def _cluster_answers(directory: Path) -> bool:
    """Whether a controller answers for this state dir, i.e. whether a start would be a no-op."""
    if not (directory / "slurm.conf").is_file() or shutil.which("scontrol") is None:
        return False
    try:
        ping = subprocess.run(
            ["scontrol", "ping"],
            env={**os.environ, **_cluster_env(directory)},
            capture_output=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return ping.returncode == 0 and b"UP" in ping.stdout


def _cannot_start(reason: str) -> NoReturn:
    if os.environ.get("MHGD_SLURM_REQUIRED") == "1":
        pytest.fail(f"SLURM is required (MHGD_SLURM_REQUIRED=1) but: {reason}")
    pytest.skip(reason)


def start_cluster(directory: Path) -> SlurmCluster:
    """Start (or find running) the cluster in `directory`; skip the test if that is impossible."""
    was_up = _cluster_answers(directory)
    try:
        started = subprocess.run(
            ["bash", str(START_SCRIPT), str(directory)],
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _cannot_start(f"{START_SCRIPT} {directory} did not finish in {START_TIMEOUT_S} s")
    if started.returncode != 0:
        _cannot_start(
            f"{START_SCRIPT} {directory} failed (exit {started.returncode}):\n"
            f"{started.stderr.strip() or started.stdout.strip()}"
        )
    return SlurmCluster(directory, _cluster_env(directory), started_now=not was_up)


def stop_cluster(directory: Path) -> None:
    stopped = subprocess.run(
        ["bash", str(STOP_SCRIPT), str(directory)],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
        check=False,
    )
    if stopped.returncode != 0:
        raise RuntimeError(f"{STOP_SCRIPT} {directory} failed:\n{stopped.stderr.strip()}")


def slurm_env() -> dict[str, str]:
    """Environment variables that point SLURM commands at the local cluster, started if needed.

    Unlike the `slurm_cluster` fixture it leaves a cluster it started running.
    """
    return start_cluster(state_dir()).env


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """One cluster for the whole session: starting it costs seconds, a job well under one."""
    cluster = start_cluster(state_dir())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in cluster.env.items():
            patch.setenv(name, value)
        yield cluster
    if cluster.started_now:
        stop_cluster(cluster.state_dir)


def job_results_within(job: submitit.Job[Any], timeout_s: float) -> list[Any]:
    """`job.results()`, bounded: a job that never finishes fails the test instead of hanging it.

    submitit's own wait has no timeout, so it runs in a daemon thread that is abandoned (and
    the job cancelled) when the bound passes.
    """
    outcome: dict[str, Any] = {}

    def wait_for_results() -> None:
        try:
            outcome["results"] = job.results()
        except Exception as error:  # handed to the caller's thread below
            outcome["error"] = error

    waiter = threading.Thread(target=wait_for_results, daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    if waiter.is_alive():
        job.cancel(check=False)
        pytest.fail(f"SLURM job {job.job_id} gave no result in {timeout_s} s (state {job.state})")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["results"]
