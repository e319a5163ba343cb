"""The local SLURM cluster does what the workflow relies on, driven through submitit.

Each test bounds its waits: a cluster that loses a job must fail the test, not hang CI.
The job functions live at module level so the job's Python can import them by reference
(jobs run with the repository root as their working directory).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import submitit
from submitit.core.utils import UncompletedJobError

from tests.slurm_support import (
    REPO_ROOT,
    START_SCRIPT,
    SlurmCluster,
    job_results_within,
    start_cluster,
    stop_cluster,
)

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# Seconds. Jobs here start in about a second; the bounds leave room for a loaded CI machine.
JOB_TIMEOUT_S = 60
JOB_START_TIMEOUT_S = 30
# submitit polls sacct at growing intervals and then waits 15 s for a result file.
CANCELLED_JOB_RAISE_S = 60
# A requeued job is killed after KillWait (5 s) and becomes eligible again ~10 s later.
REQUEUED_JOB_TIMEOUT_S = 120
FIRST_ATTEMPT_SLEEP_S = 600


def multiply(left: int, right: int) -> int:
    return left * right


def sleep_and_report(seconds: float) -> tuple[float, float]:
    """Returns (start, end) wall-clock times, to compare jobs' execution windows."""
    start = time.time()
    time.sleep(seconds)
    return start, time.time()


def announce_then_sleep(started_marker: Path, seconds: float) -> None:
    started_marker.touch()
    time.sleep(seconds)


def count_attempts(attempts_log: Path) -> int:
    """Logs each start; the first attempt then waits to be requeued, a later one finishes."""
    with attempts_log.open("a") as log:
        log.write(f"{time.time()}\n")
    attempts = len(attempts_log.read_text().splitlines())
    if attempts == 1:
        time.sleep(FIRST_ATTEMPT_SLEEP_S)
    return attempts


@pytest.fixture
def executor(slurm_cluster: SlurmCluster, tmp_path: Path) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="slurm")
    executor.update_parameters(
        timeout_min=15,
        cpus_per_task=1,
        slurm_additional_parameters={"chdir": str(REPO_ROOT)},
    )
    return executor


def wait_for_file(path: Path, timeout_s: float, job: submitit.Job[Any]) -> None:
    """Returns once the job wrote `path`; fails the test (cancelling the job) after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"job {job.job_id} did not write {path} in {timeout_s} s ({job.state})")
        time.sleep(0.2)


def sacct_state(job_id: str) -> str:
    listing = subprocess.run(
        ["sacct", "-j", job_id, "--allocations", "--noheader", "--parsable2", "-oState,ExitCode"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return listing.stdout.strip()


def test_function_job_returns_its_result(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(multiply, 6, 7)

    assert job_results_within(job, JOB_TIMEOUT_S) == [42]


def test_job_array_returns_every_task(executor: submitit.AutoExecutor) -> None:
    jobs = executor.map_array(multiply, [2, 3], [10, 10])

    results = [job_results_within(job, JOB_TIMEOUT_S) for job in jobs]

    assert results == [[20], [30]]
    array_id = jobs[0].job_id.split("_")[0]
    assert [job.job_id for job in jobs] == [f"{array_id}_0", f"{array_id}_1"]


def test_sacct_records_finished_jobs(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(multiply, 1, 1)
    job_results_within(job, JOB_TIMEOUT_S)

    # slurmctld hands the end record to slurmdbd asynchronously.
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (state := sacct_state(job.job_id)) != "COMPLETED|0:0" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "COMPLETED|0:0"


def test_cancelled_job_raises_instead_of_hanging(
    executor: submitit.AutoExecutor, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    started_marker = tmp_path / "started"
    job = executor.submit(announce_then_sleep, started_marker, FIRST_ATTEMPT_SLEEP_S)
    wait_for_file(started_marker, JOB_START_TIMEOUT_S, job)

    job.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(UncompletedJobError, match="has not produced any output"):
        job_results_within(job, CANCELLED_JOB_RAISE_S)

    record_property("cancel_to_raise_s", round(time.monotonic() - cancelled_at, 1))
    assert sacct_state(job.job_id).startswith("CANCELLED")


def test_requeued_job_restarts_and_finishes(
    executor: submitit.AutoExecutor, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    attempts_log = tmp_path / "attempts"
    job = executor.submit(count_attempts, attempts_log)
    wait_for_file(attempts_log, JOB_START_TIMEOUT_S, job)

    requeued_at = time.time()
    subprocess.run(["scontrol", "requeue", job.job_id], check=True, timeout=30)

    assert job_results_within(job, REQUEUED_JOB_TIMEOUT_S) == [2]
    first_start, second_start = (float(line) for line in attempts_log.read_text().splitlines())
    assert first_start < requeued_at < second_start
    record_property("requeue_to_restart_s", round(second_start - requeued_at, 1))


def test_dependent_job_starts_after_its_dependency_ends(
    executor: submitit.AutoExecutor,
) -> None:
    dependency = executor.submit(sleep_and_report, 3.0)
    executor.update_parameters(slurm_dependency=f"afterok:{dependency.job_id}")
    dependent = executor.submit(sleep_and_report, 0.0)
    dependent_submitted_at = time.time()

    [(_, dependency_end)] = job_results_within(dependency, JOB_TIMEOUT_S)
    [(dependent_start, _)] = job_results_within(dependent, JOB_TIMEOUT_S)

    # The dependent was queued while its dependency still ran, and a CPU was free for it.
    assert dependent_submitted_at < dependency_end <= dependent_start


def test_scripts_start_a_second_cluster_idempotently_and_stop_it_twice(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    state_dir = tmp_path / "cluster"

    first = start_cluster(state_dir)
    try:
        daemon_pids = [int(pid_file.read_text()) for pid_file in (state_dir / "run").glob("*.pid")]
        again = subprocess.run(
            ["bash", str(START_SCRIPT), str(state_dir)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
    finally:
        stop_cluster(state_dir)
    stop_cluster(state_dir)

    assert first.started_now
    assert first.env["SLURM_CONF"] != slurm_cluster.env["SLURM_CONF"]
    assert len(daemon_pids) == 5
    assert "already up" in again.stdout
    assert (state_dir / "env").read_text() == f"export SLURM_CONF={state_dir}/slurm.conf\n"
    assert not [pid for pid in daemon_pids if Path(f"/proc/{pid}").exists()]


def test_start_rejects_a_state_dir_slurm_cannot_use(tmp_path: Path) -> None:
    started = subprocess.run(
        ["bash", str(START_SCRIPT), str(tmp_path / "with space")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert started.returncode != 0
    assert "contains whitespace" in started.stderr
