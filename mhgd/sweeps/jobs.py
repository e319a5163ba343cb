"""submitit: executors from a sweep file's ``executor:`` section, job arrays, and liveness.

The section takes the parameters of hydra-submitit-launcher's profiles (same names, same
meaning), plus ``cluster: local | slurm``.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import submitit

from mhgd.sweeps.located import SweepFileError

log = logging.getLogger(__name__)

CLUSTERS = ("local", "slurm")
# Shared by both clusters (hydra-submitit-launcher's BaseQueueConf).
GENERIC_KEYS = {
    "timeout_min",
    "cpus_per_task",
    "gpus_per_node",
    "tasks_per_node",
    "mem_gb",
    "nodes",
    "name",
    "stderr_to_stdout",
}
# SLURM only (its SlurmQueueConf, except array_parallelism: in_flight sets it); ignored by
# local processes, except setup lines.
SLURM_KEYS = {
    "partition",
    "qos",
    "comment",
    "constraint",
    "exclude",
    "gres",
    "cpus_per_gpu",
    "gpus_per_task",
    "mem_per_gpu",
    "mem_per_cpu",
    "account",
    "signal_delay_s",
    "additional_parameters",
    "setup",
}
EXECUTOR_KEYS = GENERIC_KEYS | SLURM_KEYS | {"max_num_timeout"}
# submitit's local default (2 min) would kill any real trial; partitions usually allow this.
DEFAULT_TIMEOUT_MIN = 240
POLL_S = 1.0
LOCAL_JOB_MODULE = b"submitit.local._local"


class SweepAborted(RuntimeError):
    """A job failed in a way the sweep cannot go past; rerunning resumes once it is fixed."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where jobs run (``cluster``) and how (launcher parameters); file/line for errors."""

    cluster: str
    options: dict[str, Any]
    file: Path
    line: int


def make_executor(spec: ExecutorSpec, folder: Path) -> submitit.AutoExecutor:
    """An executor writing its job files under ``folder``; bad parameters name the line."""
    options = dict(spec.options)
    init = {}
    if "max_num_timeout" in options:
        init[f"{spec.cluster}_max_num_timeout"] = options.pop("max_num_timeout")
    params: dict[str, Any] = {"timeout_min": DEFAULT_TIMEOUT_MIN}
    for key, value in options.items():
        if key in GENERIC_KEYS:
            params[key] = value
        elif key == "setup":
            params.update(slurm_setup=value, local_setup=value)
        else:
            params[f"slurm_{key}"] = value
    try:
        executor = submitit.AutoExecutor(folder=folder / "%j", cluster=spec.cluster, **init)
        executor.update_parameters(**params)
    except (AssertionError, NameError, TypeError, ValueError) as exc:
        raise SweepFileError(spec.file, spec.line, f"executor: {exc}") from exc
    return executor


@dataclass(frozen=True)
class JobRef:
    """Enough to find a job again from another controller process (kept in the trial)."""

    cluster: str
    job_id: str
    folder: str
    host: str

    @classmethod
    def of(cls, job: submitit.Job[Any], cluster: str) -> JobRef:
        return cls(cluster, str(job.job_id), str(job.paths.folder), socket.gethostname())

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


class JobWatch:
    """Answers "is this job still queued or running?" for jobs this process submitted (live
    handles) and for jobs an earlier, maybe killed, controller submitted (by reference)."""

    def __init__(self) -> None:
        self._handles: dict[str, submitit.Job[Any]] = {}

    def add(self, job: submitit.Job[Any]) -> None:
        self._handles[str(job.job_id)] = job

    def is_running(self, ref: JobRef) -> bool:
        job = self._handles.get(ref.job_id)
        if ref.cluster == "slurm":
            if job is None:
                job = submitit.SlurmJob(folder=ref.folder, job_id=ref.job_id)
                self._handles[ref.job_id] = job
            return not job.done()
        if job is not None:
            return not job.done()
        return _local_job_alive(ref)


def _local_job_alive(ref: JobRef) -> bool:
    """A local job outlives a killed controller; its process id is the job id."""
    if ref.host != socket.gethostname():
        return True  # only a controller on that host can tell; assume it is still running
    try:
        return LOCAL_JOB_MODULE in Path(f"/proc/{ref.job_id}/cmdline").read_bytes()
    except OSError:
        return False


def _outcome(job: submitit.Job[Any]) -> Any:
    try:
        return job.result()
    except Exception as exc:  # reported per job by the caller
        return exc


def run_to_completion(
    executor: submitit.AutoExecutor, calls: Sequence[Callable[[], Any]], parallel: int
) -> list[Any]:
    """Run every call as a job, at most ``parallel`` at once, and return each result (or the
    exception it raised). On SLURM they are one job array."""
    if executor.cluster == "slurm":
        executor.update_parameters(slurm_array_parallelism=parallel)
        with executor.batch():
            jobs = [executor.submit(call) for call in calls]
        log.info(
            "submitted SLURM job(s) %s", ", ".join(sorted({j.job_id.split("_")[0] for j in jobs}))
        )
        return [_outcome(job) for job in jobs]
    results: list[Any] = [None] * len(calls)
    waiting = list(range(len(calls)))
    running: dict[int, submitit.Job[Any]] = {}
    while waiting or running:
        while waiting and len(running) < parallel:
            index = waiting.pop(0)
            running[index] = executor.submit(calls[index])
        for index, job in list(running.items()):
            if job.done():
                results[index] = _outcome(running.pop(index))
        time.sleep(POLL_S)
    return results
