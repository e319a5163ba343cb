"""What a job's stages are, from its config alone: identities, run directories, prerequisites.

Nothing here loads data or builds a network, so a cluster submission can plan which cached
artifacts (a teacher, an MHAN) a set of jobs needs, and submit them first, before any compute.
An artifact's key is the hash of its identity: everything its result depends on, seed included.
The cell id (records.cell_id) is the same hash without the seed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mhgd.data.subset import STUDENT_STAGE, stage_data_identity
from mhgd.engine.optim import StageSchedule, role_schedule
from mhgd.methods import PreStage, method_class
from mhgd.records import RunDir, stable_hash

CHECKPOINT_FILE = "checkpoint.pt"


def plain(node: Any) -> Any:
    """A resolved plain-Python copy of a config node."""
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


@dataclass
class StageSpec:
    """One stage to run: who it is (identity), where, and how it is labelled in records."""

    stage: str
    identity: dict[str, Any]
    run_dir: Path
    role: str
    schedule: StageSchedule
    seed: int
    model: str
    teacher: str | None
    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    weight_decay: float | None = None  # None: optim.weight_decay

    @property
    def key(self) -> str:
        return stable_hash(self.identity)


def data_identity(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The data ``stage`` trains on (a training subset counts only for the stages it names)."""
    return stage_data_identity(plain(cfg.dataset), stage)


def schedule_identity(schedule: StageSchedule) -> dict[str, Any]:
    return {
        "epochs": schedule.epochs,
        "lr": schedule.lr,
        "milestones": list(schedule.milestones),
        "gamma": schedule.gamma,
    }


def store_dir(cfg: DictConfig, stage: str, identity: dict[str, Any]) -> Path:
    return Path(cfg.paths.store) / stage / stable_hash(identity)


def teacher_spec(cfg: DictConfig, seed: int, run_dir: Path | None = None) -> StageSpec:
    """A teacher: the job's main stage when ``run_dir`` is given, else the cached artifact."""
    schedule = role_schedule(cfg.schedule, "teacher")
    identity = {
        "stage": "teacher",
        "dataset": data_identity(cfg, "teacher"),
        "model": plain(cfg.teacher),
        "schedule": schedule_identity(schedule),
        "optim": plain(cfg.optim),
        "seed": seed,
    }
    return StageSpec(
        stage="teacher",
        identity=identity,
        run_dir=run_dir or store_dir(cfg, "teacher", identity),
        role="main" if run_dir is not None else "artifact",
        schedule=schedule,
        seed=seed,
        model=cfg.teacher.name,
        teacher=None,
        method="none",
    )


def checkpoint_file(path: str | Path) -> Path:
    """A teacher given by the user: a run directory or its checkpoint file."""
    given = Path(path)
    return given / CHECKPOINT_FILE if given.is_dir() else given


def given_teacher_key(path: str | Path) -> str:
    """Identity of a user-given teacher: its run's artifact key, else a hash of the file."""
    checkpoint = checkpoint_file(path)
    run = RunDir(checkpoint.parent)
    if run.has_record():
        return run.read_record().artifact_key
    return "file-" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:16]


def configured_teacher_key(cfg: DictConfig) -> str:
    """The teacher a job's config names (a given checkpoint, or the cached teacher)."""
    if cfg.teacher_checkpoint:
        return given_teacher_key(cfg.teacher_checkpoint)
    return teacher_spec(cfg, int(cfg.teacher_seed)).key


def teacher_key(cfg: DictConfig) -> str | None:
    """The teacher a student learns from, or None when its method needs none."""
    if not method_class(cfg.method.name).needs_teacher(cfg.method):
        return None
    return configured_teacher_key(cfg)


def canonical_method(cfg: DictConfig) -> tuple[str, dict[str, Any]]:
    """The method a student really trains with, as (name, config) for its identity.

    A method that needs no teacher (``mhgd`` with ``heads=0``) computes the student alone: it
    is ``none``, so Table 1's SN column and Table 4's A = 0 are one cell trained once.
    """
    if not method_class(cfg.method.name).needs_teacher(cfg.method):
        return "none", {"name": "none"}
    return cfg.method.name, plain(cfg.method)


def student_spec(cfg: DictConfig, run_dir: Path) -> StageSpec:
    name, method_config = canonical_method(cfg)
    method = method_class(name)
    schedule = role_schedule(cfg.schedule, "student")
    key = teacher_key(cfg)
    return StageSpec(
        stage="student",
        identity={
            "stage": "student",
            "dataset": data_identity(cfg, STUDENT_STAGE),
            "model": plain(cfg.student),
            "schedule": schedule_identity(schedule),
            "optim": plain(cfg.optim),
            "method": method_config,
            "teacher": key,
            "seed": int(cfg.seed),
        },
        run_dir=run_dir,
        role="main",
        schedule=schedule,
        seed=int(cfg.seed),
        model=cfg.student.name,
        teacher=cfg.teacher.name if key else None,
        method=name,
        hparams=method.describe(cfg.method) if name == cfg.method.name else {},
    )


def pre_stage_spec(
    cfg: DictConfig, stage: PreStage, student_key: str | None, run_dir: Path | None
) -> StageSpec:
    """Shared pre-stages hang off the teacher (cached in the store); others off the student run."""
    schedule = StageSchedule(stage.epochs, stage.lr, tuple(stage.milestones), stage.gamma)
    identity: dict[str, Any] = {
        "stage": stage.name,
        # a student's own pre-stage (an init stage) trains on the student's data
        "dataset": data_identity(cfg, stage.name if stage.shared else STUDENT_STAGE),
        "optim": plain(cfg.optim),
        "schedule": schedule_identity(schedule),
        "config": dict(stage.config),
    }
    if stage.weight_decay is not None:
        identity["weight_decay"] = stage.weight_decay
    key = teacher_key(cfg)
    if stage.shared:
        identity.update(teacher=key, seed=int(stage.config.get("seed", 0)))
        where = store_dir(cfg, stage.name, identity)
    else:
        if student_key is None or run_dir is None:
            raise ValueError(f"pre-stage {stage.name!r} belongs to a student run: give its key")
        identity.update(student=student_key, seed=int(cfg.seed))
        where = run_dir / stage.name
    return StageSpec(
        stage=stage.name,
        identity=identity,
        run_dir=where,
        role="artifact",
        schedule=schedule,
        seed=identity["seed"],
        model=cfg.student.name,
        teacher=cfg.teacher.name if key else None,
        method=cfg.method.name,
        hparams=method_class(cfg.method.name).describe(cfg.method),
        weight_decay=stage.weight_decay,
    )


def prerequisites(cfg: DictConfig) -> list[StageSpec]:
    """The cached artifacts a job needs before its main stage, in the order they must run.

    A teacher job needs none; a student needs its teacher (unless one is given by path) and its
    method's shared pre-stages (MHGD's MHAN), which depend on that teacher.
    """
    if cfg.stage == "teacher" or teacher_key(cfg) is None:
        return []
    method = method_class(cfg.method.name)
    needed = [] if cfg.teacher_checkpoint else [teacher_spec(cfg, int(cfg.teacher_seed))]
    needed += [
        pre_stage_spec(cfg, stage, None, None)
        for stage in method.pre_stages(cfg.method)
        if stage.shared
    ]
    return needed
