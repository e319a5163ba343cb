"""Cluster submission: which shared artifacts a set of jobs lacks, and the job that builds them.

On a cluster, students must not build their own teacher: thirty array tasks would each hold a
GPU while queueing on the teacher's file lock. The SLURM launcher (hydra_plugins.mhgd_launcher)
plans the missing artifacts here from the configs alone, submits one build job per distinct
chain (a teacher and its MHAN; further MHANs of the same teacher wait for that job), and makes
the array depend on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import submitit
from omegaconf import DictConfig

from mhgd.engine.preemption import Preempted
from mhgd.records import RunDir, stable_hash
from mhgd.stages import StageSpec, plain, prerequisites

# What decides whether a job's networks and method fit together (pipeline.validate).
PAIRING_KEYS = ("stage", "dataset", "teacher", "student", "method", "teacher_checkpoint")


@dataclass(frozen=True)
class ArtifactBuild:
    """One build job: the missing ``artifacts`` of the job ``cfg`` (run dir ``run_dir``), in
    order. ``after`` is the index of the earlier build that trains the teacher they need."""

    cfg: DictConfig
    run_dir: Path
    artifacts: tuple[StageSpec, ...]
    after: int | None = None

    @property
    def name(self) -> str:
        return "+".join(f"{spec.stage}-{spec.key}" for spec in self.artifacts)


def plan_builds(jobs: Iterable[tuple[DictConfig, Path]]) -> list[ArtifactBuild]:
    """The build jobs that give every job (config, run dir) its finished prerequisites.

    Each missing artifact is built once: one build per teacher trains it (with the first MHAN
    that needs it); the builds of its other MHANs come after that one.
    """
    builds: list[ArtifactBuild] = []
    covered: set[str] = set()
    teacher_builds: dict[str, int] = {}
    for cfg, run_dir in jobs:
        missing = [spec for spec in prerequisites(cfg) if not RunDir(spec.run_dir).is_finished()]
        after = None
        if missing and missing[0].stage == "teacher" and missing[0].key in teacher_builds:
            after = teacher_builds[missing[0].key]
            missing = missing[1:]
        if all(spec.key in covered for spec in missing):
            continue
        covered.update(spec.key for spec in missing)
        if missing[0].stage == "teacher":
            teacher_builds[missing[0].key] = len(builds)
        builds.append(ArtifactBuild(cfg, run_dir, tuple(missing), after))
    return builds


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


def slurm_job_record() -> dict[str, str]:
    """The job running this process and its submitit log, for run records; {} outside one."""
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


class BuildArtifactsJob(submitit.helpers.Checkpointable):
    """The SLURM job of one ArtifactBuild; requeued on a time limit, it resumes the build."""

    def __init__(self, cfg: DictConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = run_dir

    def __call__(self) -> None:
        from mhgd.pipeline import run

        try:
            run(self.cfg, self.run_dir, prerequisites_only=True, extra_record=slurm_job_record())
        except Preempted as stopped:
            leave_to_slurm(stopped)
