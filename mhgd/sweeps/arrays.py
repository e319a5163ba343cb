"""Job arrays of plain runs: the confirmation of a search's best settings.

They are ordinary run records (the report averages their seeds), in
``<study folder>/confirm/trial-<n>/seed-<s>``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from mhgd.cluster.planning import plan
from mhgd.cluster.submission import Submission
from mhgd.errors import ConfigError
from mhgd.records import RunResult
from mhgd.sweeps.configs import FINAL_SPLIT, compose
from mhgd.sweeps.controller import Search, open_study
from mhgd.sweeps.jobs import executor_for
from mhgd.sweeps.space import overrides_for
from mhgd.sweeps.spec import SweepSpec
from mhgd.sweeps.workers import RunJob, RunRunner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One setting run with several seeds: its label and its jobs."""

    label: str
    jobs: list[RunJob]


def _summarise(cells: Sequence[Cell], outcomes: Sequence[object]) -> bool:
    """Print mean ± std of each cell's last top-1; True when every run finished."""
    index = 0
    all_finished = True
    for cell in cells:
        results = outcomes[index : index + len(cell.jobs)]
        index += len(cell.jobs)
        scores = []
        for job, result in zip(cell.jobs, results, strict=True):
            if isinstance(result, RunResult) and result.status == "finished":
                scores.append(result.last_score)
            else:
                all_finished = False
                log.error("run %s did not finish: %s", job.run_dir, result)
        spread = f" ± {statistics.stdev(scores):.2f}" if len(scores) > 1 else ""
        mean = f"{statistics.fmean(scores):.2f}{spread}" if scores else "n/a"
        log.info("%s: top-1 %s (%d/%d seeds)", cell.label, mean, len(scores), len(cell.jobs))
    return all_finished


def _run_cells(spec: SweepSpec, jobs_dir: Path, cells: Sequence[Cell], parallel: int) -> bool:
    """Every run of the cells, each once: finished runs are not resubmitted, runs whose job
    from an earlier (killed) command still lives are waited for, the rest are submitted."""
    jobs = [job for cell in cells for job in cell.jobs]
    cluster = spec.executor.cluster
    make = executor_for(spec.executor, jobs_dir, parallel)
    planned = plan([(compose(job.overrides), Path(job.run_dir)) for job in jobs])
    submission = Submission(planned, cluster, make)
    log.info("%d runs, %d at a time on %s", len(jobs), parallel, cluster)

    def call_for(index: int) -> tuple[RunRunner, tuple[()]]:
        return RunRunner(jobs[index]), ()

    if cluster == "slurm":
        submission.submit(spec.study, call_for)
        log.info("%s", submission.summary())
        outcomes = submission.wait()
    else:
        outcomes = submission.run_locally(spec.study, call_for, parallel)
    return _summarise(cells, [o.failure or o.value for o in outcomes])


def best_trials(study: optuna.Study, top_k: int) -> list[FrozenTrial]:
    """The top-k completed trials with distinct parameters, best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    chosen: list[FrozenTrial] = []
    seen: set[tuple] = set()
    for trial in sorted(complete, key=lambda t: t.value, reverse=maximize):
        key = tuple(sorted(trial.params.items()))
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
    return chosen[:top_k]


def run_confirm(search: Search, top_k: int) -> bool:
    """Rerun the best settings with the confirm seeds on the full training set and the test
    set (dataset.split=final), as one job array."""
    spec = search.spec
    chosen = best_trials(open_study(search, create=False), top_k)
    if not chosen:
        raise ConfigError(f"study {spec.study!r} has no completed trial yet: run the search first")
    cells = []
    for trial in chosen:
        settings = overrides_for(trial.params)
        jobs = []
        for seed in spec.confirm.seeds:
            overrides = (*spec.base, FINAL_SPLIT, *settings, f"seed={seed}")
            jobs.append(
                RunJob(
                    (*overrides, *search.layout.path_overrides),
                    str(search.layout.confirm_dir(trial.number, seed)),
                    tags=("confirm", f"study:{spec.study}", f"trial:{trial.number}"),
                    extra={"study": spec.study, "trial": trial.number, "sweep_phase": "confirm"},
                )
            )
        label = f"trial {trial.number} (tune {trial.value:.2f}) {' '.join(settings)}"
        cells.append(Cell(label, jobs))
    return _run_cells(spec, search.layout.jobs_dir, cells, spec.in_flight)
