"""Submit a plan (builds first, then one array per set of builds), wait, report failures.

Every submitted job leaves a ticket (mhgd.cluster.jobs.Ticket) beside its run, so a rerun of
the same command, after the waiting process died, waits for the jobs still queued or running
instead of submitting them again. A failed build is reported the moment SLURM says so; SLURM
cancels only the runs that wait for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from textwrap import indent
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, UncompletedJobError

from mhgd.cluster.jobs import BuildArtifactsJob, Ticket, write_ticket
from mhgd.cluster.packing import PackedRuns
from mhgd.cluster.planning import Plan
from mhgd.records import RunDir

log = logging.getLogger(__name__)

POLL_S = 2.0
# How much of a failed job's error the final report quotes.
ERROR_TAIL_LINES = 8
# (job name, job ids to wait for) -> an executor for those jobs
ExecutorFor = Callable[[str, Sequence[str]], submitit.AutoExecutor]
# a run's index in the plan -> (the function its job calls, its arguments)
CallFor = Callable[[int], tuple[Callable[..., Any], tuple[Any, ...]]]


@dataclass
class Outcome:
    """How one run of the plan ended: its job's return value, or why there is none."""

    value: Any = None
    failure: str | None = None


def _tail(error: Exception) -> str:
    # submitit ends a job's traceback with where its logs are: those are named anyway.
    text = str(error).split("You can check full logs")[0]
    lines = [line for line in text.splitlines() if line.strip("- ")]
    return indent("\n".join(lines[-ERROR_TAIL_LINES:]), "    ")


def describe_failure(job: submitit.Job[Any], what: str, error: Exception) -> str:
    """One failed job: what it ran, its SLURM state, its logs and the end of its error."""
    if isinstance(error, FailedJobError):  # a subclass of UncompletedJobError
        outcome, detail = "raised an error", "\n" + _tail(error)
    else:
        outcome, detail = f"ended {job.state} without a result", ""
    logs = f"logs {job.paths.stdout} and {job.paths.stderr.name}"
    return f"- {what}: job {job.job_id} {outcome}; {logs}{detail}"


class Submission:
    """One submission of a plan on one cluster."""

    def __init__(
        self,
        plan: Plan,
        cluster: str,
        executor_for: ExecutorFor,
        build_executor_for: ExecutorFor | None = None,
    ) -> None:
        self.plan = plan
        self.cluster = cluster
        self.executor_for = executor_for
        self.build_executor_for = build_executor_for or executor_for
        self.build_jobs: list[submitit.Job[Any]] = []
        self.run_jobs: dict[int, submitit.Job[Any]] = {}
        self.slots: dict[int, int | None] = {}  # a run's place in a packed job
        self._good_builds: set[int] = set()

    def submit(self, name: str, call_for: CallFor, runs_per_job: int = 1) -> None:
        """Submit what the plan lacks; attach to the live jobs of earlier commands.

        ``runs_per_job`` > 1 packs that many runs (of the same builds) into each job.
        """
        self._attach_runs()
        self.submit_builds()
        for builds, indices in self.plan.groups().items():
            after = [self.build_jobs[b].job_id for b in builds]
            packs = [indices[i : i + runs_per_job] for i in range(0, len(indices), runs_per_job)]
            executor = self.executor_for(name, after)
            with executor.batch():
                jobs = [
                    executor.submit(PackedRuns([call_for(i) for i in pack]))
                    if runs_per_job > 1
                    else executor.submit(call_for(pack[0])[0], *call_for(pack[0])[1])
                    for pack in packs
                ]
            for pack, job in zip(packs, jobs, strict=True):
                for slot, index in enumerate(pack):
                    self._submitted(index, job, slot if runs_per_job > 1 else None)

    def run_locally(self, name: str, call_for: CallFor, parallel: int) -> list[Outcome]:
        """The same as local processes, which know no dependencies: each build's wave first,
        then the runs, at most ``parallel`` at once."""
        self._attach_runs()
        self.submit_builds()
        outcomes = self.wait()
        failed_builds = self.failed_builds
        queue = [
            i
            for indices in self.plan.groups().values()
            for i in indices
            if not failed_builds & set(self.plan.runs[i].builds)
        ]
        running: dict[int, submitit.Job[Any]] = {}
        while queue or running:
            while queue and len(running) < parallel:
                index = queue.pop(0)
                fn, args = call_for(index)
                running[index] = self.executor_for(name, []).submit(fn, *args)
                self._submitted(index, running[index])
            for index, job in list(running.items()):
                if job.done():
                    del running[index]
                    self._collect("run", index, job, outcomes)
            time.sleep(POLL_S)
        return outcomes

    @property
    def failed_builds(self) -> set[int]:
        return set(range(len(self.plan.builds))) - self._good_builds

    def _attach_runs(self) -> None:
        for index, run in enumerate(self.plan.runs):
            if run.live is not None:
                self.run_jobs[index] = run.live.job()
                self.slots[index] = run.live.slot
                log.info(
                    "%s: already submitted as job %s, waiting for it", run.run_dir, run.live.job_id
                )

    def _submitted(self, index: int, job: submitit.Job[Any], slot: int | None = None) -> None:
        self.run_jobs[index] = job
        self.slots[index] = slot
        write_ticket(self.plan.runs[index].ticket_path, Ticket.of(job, self.cluster, slot))
        log.info("job %s -> %s", job.job_id, self.plan.runs[index].run_dir)

    def submit_builds(self) -> None:
        """Builds in order; locally each waits here for the one that trains its teacher."""
        for build in self.plan.builds:
            if build.live is not None:
                job = build.live.job()
                log.info("%s: already being built by job %s", build.name, job.job_id)
            else:
                after = [] if build.after is None else [self.build_jobs[build.after].job_id]
                job = self.build_executor_for(build.name, after).submit(
                    BuildArtifactsJob(build.cfg, build.run_dir)
                )
                write_ticket(build.ticket_path, Ticket.of(job, self.cluster))
                waits = f" after job {after[0]}" if after else ""
                log.info("missing %s: job %s builds it%s", build.name, job.job_id, waits)
            self.build_jobs.append(job)
            if self.cluster == "local":
                job.wait()

    def summary(self) -> str:
        finished = sum(run.result is not None for run in self.plan.runs)
        attached = sum(run.live is not None for run in self.plan.runs)
        new = len(self.plan.runs) - finished - attached
        builds = sum(b.live is None for b in self.plan.builds)
        return (
            f"{len(self.plan.runs)} runs: {finished} finished before, {attached} already "
            f"queued or running, {new} submitted now (+{builds} build jobs)"
        )

    def wait(self) -> list[Outcome]:
        """Wait for every job; report each failure as soon as it is known."""
        outcomes = [Outcome(value=run.result) for run in self.plan.runs]
        pending: dict[tuple[str, int], submitit.Job[Any]] = {
            **{("build", i): job for i, job in enumerate(self.build_jobs)},
            **{("run", i): job for i, job in self.run_jobs.items()},
        }
        while pending:
            for (kind, index), job in list(pending.items()):
                if not job.done():
                    continue
                del pending[(kind, index)]
                self._collect(kind, index, job, outcomes)
            if pending:
                time.sleep(POLL_S)
        return outcomes

    def _collect(
        self, kind: str, index: int, job: submitit.Job[Any], outcomes: list[Outcome]
    ) -> None:
        slot = self.slots.get(index) if kind == "run" else None
        try:
            value = job.result()
        except (FailedJobError, UncompletedJobError) as error:
            own = RunDir(self.plan.runs[index].run_dir).read_result() if slot is not None else None
            if own is not None and own.status == "finished":
                outcomes[index].value = own  # another run of its packed job failed, not it
            else:
                self._failed(kind, index, job, error, outcomes)
            return
        if kind == "run":
            outcomes[index].value = value if slot is None else value[slot]
        else:
            self._good_builds.add(index)

    def _failed(
        self,
        kind: str,
        index: int,
        job: submitit.Job[Any],
        error: Exception,
        outcomes: list[Outcome],
    ) -> None:
        if kind == "run":
            if outcomes[index].failure is not None:
                return  # cancelled because its build failed: already said
            what = f"run {self.plan.runs[index].run_dir}"
            outcomes[index].failure = describe_failure(job, what, error)
            log.error("%s", outcomes[index].failure)
            return
        build = self.plan.builds[index]
        failure = describe_failure(job, f"build of {build.name}", error)
        dependents: list[Path] = self.plan.dependents(index)
        log.error("%s\n    SLURM cancels the %d runs waiting for it", failure, len(dependents))
        for run_index, run in enumerate(self.plan.runs):
            if index in run.builds:
                outcomes[run_index].failure = (
                    f"- run {run.run_dir}: not run, its prerequisite failed:\n"
                    + indent(failure, "  ")
                )


def failures(outcomes: Sequence[Outcome]) -> list[str]:
    return [o.failure for o in outcomes if o.failure is not None]
