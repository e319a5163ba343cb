"""submitit for sweeps: executors from a sweep file's ``executor:`` section, and liveness.

The section takes the keys of the launcher profiles (mhgd.cluster.executors), plus
``cluster: local | slurm``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from mhgd.cluster.executors import CLUSTERS, GENERIC_KEYS, make_executor
from mhgd.sweeps.located import SweepFileError

if TYPE_CHECKING:  # the sweep file's checks must not load torch (mhgd.cluster.jobs does)
    from mhgd.cluster.jobs import Ticket
    from mhgd.cluster.submission import ExecutorFor

__all__ = ["CLUSTERS", "EXECUTOR_KEYS", "ExecutorSpec", "JobWatch", "SweepAborted", "executor_for"]

# SLURM only (the profiles' SlurmQueueConf, except array_parallelism: in_flight sets it);
# ignored by local processes, except setup lines.
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
POLL_S = 1.0


class SweepAborted(RuntimeError):
    """A job failed in a way the sweep cannot go past; rerunning resumes once it is fixed."""


@dataclass(frozen=True)
class ExecutorSpec:
    """Where jobs run (``cluster``) and how (launcher parameters); file/line for errors."""

    cluster: str
    options: dict[str, Any]
    file: Path
    line: int


def executor_for(spec: ExecutorSpec, folder: Path, parallel: int) -> ExecutorFor:
    """A factory of executors (name, job ids to wait for) writing job files under ``folder``;
    bad parameters name the sweep file's line."""
    options = {**spec.options}
    if spec.cluster == "slurm":
        options["array_parallelism"] = parallel

    def make(name: str, after: Sequence[str]) -> submitit.AutoExecutor:
        try:
            return make_executor(folder, spec.cluster, {**options, "name": name}, after=after)
        except (AssertionError, NameError, TypeError, ValueError) as exc:
            raise SweepFileError(spec.file, spec.line, f"executor: {exc}") from exc

    make("check", [])  # refuse bad parameters before anything is submitted
    return make


class JobWatch:
    """Answers "is this job still queued or running?" for jobs this process submitted (live
    handles) and for jobs an earlier, maybe killed, controller submitted (by ticket)."""

    def __init__(self) -> None:
        self._handles: dict[str, submitit.Job[Any]] = {}

    def add(self, job: submitit.Job[Any]) -> None:
        self._handles[str(job.job_id)] = job

    def is_running(self, ticket: Ticket) -> bool:
        job = self._handles.get(ticket.job_id)
        if job is not None:
            return not job.done()
        return ticket.is_live()
