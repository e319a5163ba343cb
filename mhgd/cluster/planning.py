"""Planning a submission from the configs alone: what is done, what runs, what waits for what.

On a cluster, runs must not build their own teacher: thirty array tasks would each hold a GPU
while waiting for the one that trains it. So before anything is submitted, each run is sorted
into finished (nothing to do), attached (a live job from an earlier command trains it) or to
submit; the missing artifacts of the runs to submit become build jobs (one per teacher with its
first MHAN, one per further MHAN after it), and each run waits for exactly the builds it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from omegaconf import DictConfig

from mhgd.cluster.jobs import TICKET_FILE, Ticket, live_ticket
from mhgd.records import RunDir, RunResult, stable_hash
from mhgd.slots import check_folder, finished_result, slot_path
from mhgd.stages import StageSpec, plain, prerequisites

# What decides whether a job's networks and method fit together (pipeline.validate).
PAIRING_KEYS = ("stage", "dataset", "teacher", "student", "method", "teacher_checkpoint")


@dataclass(frozen=True)
class ArtifactBuild:
    """One build job: the missing ``artifacts`` of the job ``cfg`` (run dir ``run_dir``), in
    order. ``after`` is the index of the earlier build that trains the teacher they need;
    ``live`` the job of an earlier command that is already building them."""

    cfg: DictConfig
    run_dir: Path
    artifacts: tuple[StageSpec, ...]
    after: int | None = None
    live: Ticket | None = None

    @property
    def name(self) -> str:
        return "+".join(f"{spec.stage}-{spec.key}" for spec in self.artifacts)

    @property
    def ticket_path(self) -> Path:
        first = self.artifacts[0]
        slot = slot_path(self.cfg.paths.store, first)
        return slot.with_name(slot.name + "." + TICKET_FILE)


@dataclass
class PlannedRun:
    """One run of the submission and what to do with it."""

    cfg: DictConfig
    run_dir: Path
    result: RunResult | None = None  # finished already (here or in its identity's folder)
    live: Ticket | None = None  # a job submitted earlier still trains it
    builds: tuple[int, ...] = ()  # the builds it waits for

    @property
    def ticket_path(self) -> Path:
        return self.run_dir / TICKET_FILE

    @property
    def to_submit(self) -> bool:
        return self.result is None and self.live is None


@dataclass
class Plan:
    runs: list[PlannedRun]
    builds: list[ArtifactBuild] = field(default_factory=list)

    def groups(self) -> dict[tuple[int, ...], list[int]]:
        """Runs to submit, by the builds they wait for: one job array per group."""
        grouped: dict[tuple[int, ...], list[int]] = {}
        for index, run in enumerate(self.runs):
            if run.to_submit:
                grouped.setdefault(run.builds, []).append(index)
        return grouped

    def dependents(self, build: int) -> list[Path]:
        return [run.run_dir for run in self.runs if build in run.builds]


def _main_spec(cfg: DictConfig, run_dir: Path) -> StageSpec:
    from mhgd.pipeline import main_spec

    return main_spec(cfg, run_dir)


def plan(jobs: Iterable[tuple[DictConfig, Path]]) -> Plan:
    """Sort the runs, then plan the builds the runs to submit need (each artifact once)."""
    runs = []
    for cfg, run_dir in jobs:
        spec = _main_spec(cfg, run_dir)
        check_folder(spec)
        done = finished_result(cfg.paths.store, spec)
        live = None if done else live_ticket(run_dir / TICKET_FILE)
        runs.append(PlannedRun(cfg, run_dir, done[1] if done else None, live))
    result = Plan(runs)
    builds = result.builds
    by_key: dict[str, int] = {}
    for run in runs:
        if not run.to_submit:
            continue
        missing = [s for s in prerequisites(run.cfg) if not RunDir(s.run_dir).is_finished()]
        needed = {by_key[s.key] for s in missing if s.key in by_key}
        new = [s for s in missing if s.key not in by_key]
        if new:
            teacher = new[0].identity.get("teacher") if new[0].stage != "teacher" else None
            build = ArtifactBuild(run.cfg, run.run_dir, tuple(new), by_key.get(teacher or ""))
            build = replace(build, live=live_ticket(build.ticket_path))
            builds.append(build)
            by_key.update((s.key, len(builds) - 1) for s in new)
            needed.add(len(builds) - 1)
        run.builds = tuple(sorted(needed))
    return result


def check_before_submit(configs: Iterable[DictConfig]) -> None:
    """Raise the ConfigError a job would hit (unknown model, a pairing the method rejects)
    before anything is queued, instead of hours later in every task of the array."""
    from mhgd.pipeline import validate

    checked: set[str] = set()
    for cfg in configs:
        pairing = stable_hash({key: plain(cfg.get(key)) for key in PAIRING_KEYS})
        if pairing in checked:
            continue
        checked.add(pairing)
        validate(cfg)
