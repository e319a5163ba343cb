"""What runs inside a submitted job, and the tickets that let a rerun find the job again."""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NoReturn

import submitit
from omegaconf import DictConfig
from submitit.helpers import Checkpointable

from mhgd.engine.preemption import Preempted
from mhgd.files import read_json, write_json_atomic

log = logging.getLogger(__name__)

TICKET_FILE = "job.json"
LOCAL_JOB_MODULE = b"submitit.local._local"


def slurm_job_record() -> dict[str, str]:
    """The job running this process and its submitit log, for run records; {} outside one."""
    if not os.environ.get("SLURM_JOB_ID"):
        return {}
    try:
        job = submitit.JobEnvironment()
    except RuntimeError:
        return {}
    return {"slurm_job_id": job.job_id, "slurm_log": str(job.paths.stdout)}


def leave_to_slurm(stopped: Preempted) -> NoReturn:
    """End a job stopped by SIGTERM (requeue, preemption, cancel) without a submitit result.

    Its checkpoint is saved. A result file would tell the waiting launcher that the job is
    over even though SLURM is about to rerun it; without one, the launcher keeps waiting for
    the requeued run, or reports the cancellation once SLURM accounts for it.
    """
    raise SystemExit(f"mhgd: {stopped}; SLURM requeues or cancels this job")


def job_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


class PreemptibleJob(Checkpointable):
    """The base of every submitted call: requeued by submitit at its time limit (the run
    resumes from its checkpoint), ended without a result when SLURM stops it, and raising
    (so SLURM records FAILED) when the run fails."""

    def __call__(self) -> Any:
        job_logging()
        try:
            return self.work()
        except Preempted as stopped:
            leave_to_slurm(stopped)

    def work(self) -> Any:
        raise NotImplementedError


class BuildArtifactsJob(PreemptibleJob):
    """Builds the shared artifacts (teacher, MHANs) a run needs, before the runs start."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir

    def work(self) -> None:
        from mhgd.pipeline import run

        run(self.cfg, self.run_dir, prerequisites_only=True, extra_record=slurm_job_record())


@dataclass(frozen=True)
class Ticket:
    """Enough to find a submitted job again from another process: written beside the run
    when its job is submitted, read by a rerun of the same command to reattach."""

    cluster: str
    job_id: str
    folder: str
    host: str
    submitted: float = 0.0
    slot: int | None = None  # the run's place in a job that trains several (PackedRuns)

    @classmethod
    def of(cls, job: submitit.Job[Any], cluster: str, slot: int | None = None) -> Ticket:
        return cls(
            cluster,
            str(job.job_id),
            str(job.paths.folder),
            socket.gethostname(),
            time.time(),
            slot,
        )

    def job(self) -> submitit.Job[Any]:
        if self.cluster == "slurm":
            return submitit.SlurmJob(folder=self.folder, job_id=self.job_id)
        return ReattachedLocalJob(folder=self.folder, job_id=self.job_id)

    def is_live(self) -> bool:
        """Still queued or running: a rerun waits for it instead of submitting again."""
        if self.cluster == "slurm":
            return not self.job().done()
        if self.host != socket.gethostname():
            return True  # only a process on that host can tell; assume it still runs
        return _local_job_runs(self.job_id)


def _local_job_runs(pid: str) -> bool:
    """A local job outlives the process that started it; its process id is its job id."""
    try:
        return LOCAL_JOB_MODULE in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


class ReattachedLocalJob(submitit.LocalJob):
    """A local job started by an earlier (maybe killed) process: submitit only knows the
    processes it started itself, so liveness comes from the process table."""

    def get_info(self, mode: str = "force") -> dict[str, str]:
        if _local_job_runs(self.job_id):
            return {"jobState": "RUNNING"}
        return super().get_info(mode)


def write_ticket(path: Path, ticket: Ticket) -> None:
    write_json_atomic(path, asdict(ticket))


def read_ticket(path: Path) -> Ticket | None:
    try:
        return Ticket(**read_json(path))
    except (OSError, ValueError, TypeError):
        return None


def live_ticket(path: Path) -> Ticket | None:
    ticket = read_ticket(path)
    return ticket if ticket is not None and ticket.is_live() else None
