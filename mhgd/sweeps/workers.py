"""What runs inside a job: one Optuna trial, or one plain run of a grid or confirmation array.

Both are submitit Checkpointables: when a job reaches its time limit submitit requeues the same
call, and the pipeline resumes the run from its checkpoint. A job stopped by SIGTERM (SLURM
preemption or requeue) ends without a result, so it is waited for rather than reported over.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from mhgd.cluster.jobs import PreemptibleJob, slurm_job_record
from mhgd.engine.preemption import Preempted
from mhgd.pipeline import run
from mhgd.records import RunDir, RunResult
from mhgd.secrets import EnvSecret
from mhgd.sweeps.algorithms import Algorithm, build_pruner, open_storage
from mhgd.sweeps.configs import compose

log = logging.getLogger(__name__)
ERROR_ATTR_CHARS = 2000


class Pruned(optuna.TrialPruned):
    """Raised from the epoch hook: the pipeline records the run as pruned, not failed."""

    run_status = "pruned"


@dataclass(frozen=True)
class TrialJob:
    """Everything a trial's job needs; the study itself is reached through ``storage``, whose
    URL (it may hold a password) travels in the job's environment, not in its pickle."""

    storage: EnvSecret
    study: str
    pruner: Algorithm
    trial_id: int
    number: int
    overrides: tuple[str, ...]
    run_dir: str
    metric_field: str
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class TrialRunner(PreemptibleJob):
    """Trains one trial's student, reporting validation top-1 per epoch to the study, and
    tells the study how it ended (complete, pruned, or failed with its error)."""

    def __init__(self, job: TrialJob) -> None:
        self.job = job

    def work(self) -> float | None:
        job = self.job
        storage = open_storage(job.storage.value())
        study = optuna.load_study(
            study_name=job.study, storage=storage, pruner=build_pruner(job.pruner)
        )
        known = storage.get_trial(job.trial_id)
        if known.state.is_finished():
            log.info("trial %d already ended (%s)", job.number, known.state.name)
            return known.value
        trial = optuna.trial.Trial(study, job.trial_id)
        reported = set(known.intermediate_values)
        # A retry or a requeued job resumes a run: its earlier epochs count for pruning too.
        for row in RunDir(job.run_dir).read_metrics():
            if int(row["epoch"]) not in reported:
                trial.report(float(row["score"]), int(row["epoch"]))
                reported.add(int(row["epoch"]))

        def report(row: dict[str, Any]) -> None:
            epoch = int(row["epoch"])
            if epoch not in reported:
                trial.report(float(row["score"]), epoch)
                reported.add(epoch)
            if trial.should_prune():
                raise Pruned(f"trial {job.number} pruned after epoch {epoch}")

        try:
            result = run(
                compose(job.overrides),
                job.run_dir,
                epoch_hook=report,
                tags=list(job.tags),
                extra_record={**job.extra, **slurm_job_record()},
            )
        except optuna.TrialPruned as pruned:
            log.info("%s", pruned)
            study.tell(trial, state=TrialState.PRUNED)
            return None
        except Preempted:
            raise  # the trial stays running; the requeued job resumes it
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:ERROR_ATTR_CHARS])
            study.tell(trial, state=TrialState.FAIL)
            raise
        value = getattr(result, job.metric_field)
        study.tell(trial, value)
        return value


@dataclass(frozen=True)
class RunJob:
    """One plain run of a job array: a grid cell or a confirmation seed."""

    overrides: tuple[str, ...]
    run_dir: str
    tags: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class RunRunner(PreemptibleJob):
    def __init__(self, job: RunJob) -> None:
        self.job = job

    def work(self) -> RunResult | None:
        return run(
            compose(self.job.overrides),
            Path(self.job.run_dir),
            tags=list(self.job.tags),
            extra_record={**self.job.extra, **slurm_job_record()},
        )
