"""The ask/tell loop of a search: K trials in flight until the study holds N completed plus
pruned trials, resuming whatever an earlier (maybe killed) controller left behind.

Trials report and tell the study themselves (mhgd.sweeps.workers), so results never depend
on the controller staying alive. The controller only asks new trials, submits their jobs, and
notices jobs that ended without telling (killed, out of memory, node lost): it marks those
trials failed and enqueues a retry with the same parameters, which resumes the run's checkpoint.
All of that happens under a file lock in the study folder, so several controllers can share
one study without losing or duplicating trials.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from mhgd.cluster.jobs import Ticket
from mhgd.cluster.submission import ExecutorFor
from mhgd.errors import ConfigError
from mhgd.files import Lease
from mhgd.secrets import EnvSecret
from mhgd.sweeps.algorithms import (
    build_pruner,
    build_sampler,
    describe_storage,
    is_database_url,
    open_storage,
)
from mhgd.sweeps.configs import TUNE_SPLIT, Layout, check_configs, compose, layout
from mhgd.sweeps.jobs import POLL_S, JobWatch, SweepAborted, executor_for
from mhgd.sweeps.prebuild import prebuild
from mhgd.sweeps.space import overrides_for
from mhgd.sweeps.spec import METRICS, SearchSpec
from mhgd.sweeps.workers import TrialJob, TrialRunner

log = logging.getLogger(__name__)

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# Trial jobs find the study's storage URL here (inherited from the controller's environment).
STORAGE_VARIABLE = "MHGD_OPTUNA_STORAGE"


@dataclass(frozen=True)
class Search:
    """A checked search, ready to run: nothing has been submitted yet.

    ``storage`` may hold a password: show it only through ``describe_storage``."""

    spec: SearchSpec
    layout: Layout
    storage: str
    base_overrides: tuple[str, ...]
    teacher_varies: bool

    def trial_overrides(self, params: dict[str, Any]) -> tuple[str, ...]:
        return (*self.base_overrides, *overrides_for(params), *self.layout.path_overrides)


def _storage_location(given: str | None, where: Layout) -> str:
    """Relative journal files and SQLite paths live in the study folder, so every job,
    whatever its working directory, reaches the same study. ``$NAME`` is read from the
    environment, so a database password need not be written in a shared sweep file."""
    if given is None:
        return where.default_storage
    given = os.path.expandvars(given)
    if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
        return f"sqlite:///{where.study_dir / given.removeprefix('sqlite:///')}"
    if is_database_url(given):
        return given
    path = Path(given).expanduser()
    return str(path if path.is_absolute() else where.study_dir / path)


def prepare_search(spec: SearchSpec) -> Search:
    """Every check of a search file that needs the Hydra config (nothing is submitted)."""
    base_overrides = (*spec.base, TUNE_SPLIT)
    axes = [(p.path, p.line, p.probe_values()) for p in spec.params]
    checked = check_configs(spec, base_overrides, axes)
    where = layout(spec, checked.base)
    storage = _storage_location(spec.storage, where)
    return Search(spec, where, storage, base_overrides, checked.teacher_varies)


def exclusive(lock_file: Path) -> AbstractContextManager[None]:
    """Serialise controllers of one study, on any host (a lease: NFS and Lustre too)."""
    return Lease(lock_file).held("the study's controller lock", wait=True)


def open_study(search: Search, *, create: bool = True) -> optuna.Study:
    """Create the study (or load it, to resume); a direction change would mix two objectives.
    The controller's pruner matters too: Hyperband makes the sampler work per bracket."""
    spec = search.spec
    pruner = build_pruner(spec.pruner)
    with exclusive(search.layout.lock_file):
        storage = open_storage(search.storage)
        if create:
            study = optuna.create_study(
                study_name=spec.study,
                storage=storage,
                direction=spec.direction,
                pruner=pruner,
                load_if_exists=True,
            )
        else:
            try:
                study = optuna.load_study(study_name=spec.study, storage=storage, pruner=pruner)
            except KeyError:
                raise ConfigError(
                    f"there is no study {spec.study!r} in {describe_storage(search.storage)}: "
                    f"run mhgd-sweep {spec.source.file} first"
                ) from None
    if study.direction.name.lower() != spec.direction:
        raise ConfigError(
            f"study {spec.study!r} in {describe_storage(search.storage)} was created to "
            f"{study.direction.name.lower()}, but {spec.source.file} says {spec.direction}: "
            "use another study name"
        )
    return study


def _describe(params: dict[str, Any]) -> str:
    return " ".join(overrides_for(params))


class Controller:
    """One controller process of a study (several may run at once, on one lock)."""

    def __init__(self, search: Search, study: optuna.Study, executor: ExecutorFor):
        self.search = search
        self.spec = search.spec
        self.study = study
        self.executor = executor
        self.watch = JobWatch()
        self.mine: set[int] = set()
        self.sampler_ready = False
        # When searched values change the teacher each trial trains its own; otherwise the
        # first launch builds the one teacher all trials share.
        self.teacher_ready = search.teacher_varies
        self.failed_before = {
            t.number for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        }

    def run(self) -> list[FrozenTrial]:
        """Run until the study holds the requested trials and none is in flight."""
        while True:
            with exclusive(self.search.layout.lock_file):
                trials = self._reconcile()
                done = sum(t.state in DONE for t in trials)
                running = sum(t.state == TrialState.RUNNING for t in trials)
                if done >= self.spec.trials and running == 0:
                    return trials
                # Every running trial counts, also those an earlier controller started: after
                # _reconcile, each of them has a live job.
                while running < self.spec.in_flight and done + running < self.spec.trials:
                    self._launch(len(trials))
                    running += 1
            time.sleep(POLL_S)

    # -- reconciling the storage with the jobs ---------------------------------------------
    def _reconcile(self) -> list[FrozenTrial]:
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            ref = trial.user_attrs.get("job")
            if ref is None or not self.watch.is_running(Ticket(**ref)):
                ended = self.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                if ended.state == TrialState.FAIL:
                    log.warning(
                        "trial %d: job %s ended without a result (killed, out of memory, lost "
                        "node?); logs in %s",
                        trial.number,
                        ref and ref["job_id"],
                        ref and ref["folder"],
                    )
        trials = self.study.get_trials(deepcopy=False)
        retried = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
        for trial in trials:
            if trial.state == TrialState.FAIL and trial.number not in retried:
                self._retry(trial)
        trials = self.study.get_trials(deepcopy=False)
        for trial in trials:
            self._report(trial)
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        self.mine &= running
        return trials

    def _retry(self, failed: FrozenTrial) -> None:
        attempt = int(failed.user_attrs.get("attempt", 1))
        if attempt > self.spec.retries:
            if failed.number not in self.failed_before:
                raise SweepAborted(
                    f"trial {failed.number} ({_describe(failed.params)}) failed {attempt} time(s): "
                    f"{failed.user_attrs.get('error', 'its job ended without a result')}. "
                    f"See {failed.user_attrs.get('run_dir')}/error.txt and the job logs in "
                    f"{self.search.layout.jobs_dir}; rerun the command once it is fixed"
                )
            return
        attrs = {"retry_of": failed.number, "attempt": attempt + 1}
        if "run_dir" in failed.user_attrs:
            attrs["run_dir"] = failed.user_attrs["run_dir"]
        self.study.enqueue_trial(failed.params, user_attrs=attrs)
        log.warning(
            "trial %d failed (%s); retrying it (attempt %d)",
            failed.number,
            failed.user_attrs.get("error", "its job ended without reporting"),
            attempt + 1,
        )

    def _report(self, trial: FrozenTrial) -> None:
        if trial.number not in self.mine or not trial.state.is_finished():
            return
        if trial.state == TrialState.COMPLETE:
            params = _describe(trial.params)
            log.info("trial %d complete: %.2f (%s)", trial.number, trial.value, params)
        elif trial.state == TrialState.PRUNED:
            log.info("trial %d pruned at epoch %s", trial.number, trial.last_step)

    # -- launching --------------------------------------------------------------------------
    def _launch(self, trials_so_far: int) -> None:
        if not self.sampler_ready:
            # Offset the seed by the trials already drawn, so a resumed or second controller
            # does not replay the same random draws.
            self.study.sampler = build_sampler(self.spec.sampler, seed_offset=trials_so_far)
            self.sampler_ready = True
        trial = self.study.ask({p.path: p.distribution() for p in self.spec.params})
        run_dir = trial.user_attrs.get("run_dir") or str(self.search.layout.trial_dir(trial.number))
        # Before submitting: a controller killed between the submission and the job's ticket
        # leaves a trial whose retry then trains in the same folder, where the run's lease
        # makes it wait for (and reuse) a job that outlived the controller.
        trial.set_user_attr("run_dir", run_dir)
        job = TrialJob(
            storage=EnvSecret.stash(STORAGE_VARIABLE, self.search.storage),
            study=self.spec.study,
            pruner=self.spec.pruner,
            trial_id=trial._trial_id,
            number=trial.number,
            overrides=self.search.trial_overrides(trial.params),
            run_dir=run_dir,
            metric_field=METRICS[self.spec.metric],
            tags=("tune", f"study:{self.spec.study}", f"trial:{trial.number}"),
            extra={"study": self.spec.study, "trial": trial.number, "sweep_phase": "tune"},
        )
        if not self.teacher_ready:
            # The first trial's artifacts are built by one job before any trial is queued, so
            # the other trials never hold a GPU while waiting for the teacher.
            prebuild(
                self.spec.executor.cluster, self.executor, [(compose(job.overrides), Path(run_dir))]
            )
            self.teacher_ready = True
        try:
            submitted = self.executor(self.spec.study, []).submit(TrialRunner(job))
        except Exception as exc:
            trial.set_user_attr("error", f"submission failed: {exc}")
            self.study.tell(trial, state=TrialState.FAIL)
            raise SweepAborted(f"could not submit trial {trial.number}: {exc}") from exc
        self.watch.add(submitted)
        trial.set_user_attr("job", asdict(Ticket.of(submitted, self.spec.executor.cluster)))
        trial.set_user_attr("overrides", list(job.overrides))
        self.mine.add(trial.number)
        params = _describe(trial.params)
        log.info("trial %d started as job %s: %s", trial.number, submitted.job_id, params)


def run_search(search: Search) -> list[FrozenTrial]:
    study = open_study(search)
    executor = executor_for(search.spec.executor, search.layout.jobs_dir, search.spec.in_flight)
    log.info(
        "study %s in %s: %d trials, %d in flight on %s",
        search.spec.study,
        describe_storage(search.storage),
        search.spec.trials,
        search.spec.in_flight,
        search.spec.executor.cluster,
    )
    return Controller(search, study, executor).run()
