"""Orchestration of a job: teacher -> (method pre-stages, e.g. MHAN) -> student.

A job trains one *main* stage (a teacher, or a student). What a student needs first (its
teacher, MHGD's MHAN) is an *artifact*: a stage run kept in ``paths.store`` and reused by every
job that asks for the same one. Every stage run, main or artifact, is addressed by its identity
and owned by one process while it trains (mhgd.slots), and runs as a StageRun (its record, W&B
run and result; mhgd.stage_run).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mhgd.config import check
from mhgd.data import DATASETS, DataSpec, load_dataset, training_size
from mhgd.engine.checkpoint import CheckpointError, load_checkpoint
from mhgd.engine.host_memory import keep_freed_host_memory
from mhgd.engine.loop import TrainingTask
from mhgd.engine.tasks import ClassifierTask
from mhgd.errors import ConfigError
from mhgd.methods import Distiller, method_class
from mhgd.methods.mhgd import GraphProbe
from mhgd.models import DEFAULT_INIT, MODEL_NAMES, SensedModel, build_model
from mhgd.records import RunDir, RunResult
from mhgd.slots import check_folder, finished_result, link, owned
from mhgd.stage_run import Context, EpochHook, StageRun, check_not_failed
from mhgd.stages import (
    CHECKPOINT_FILE,
    StageSpec,
    canonical_method,
    checkpoint_file,
    configured_teacher_key,
    data_identity,
    pre_stage_spec,
    prerequisites,
    student_spec,
    teacher_spec,
)

log = logging.getLogger(__name__)

STAGES = ("teacher", "student")


# -- validation before any compute ------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={name} but this machine has no CUDA device")
    return torch.device(name)


def _model(cfg_model: Any, spec: DataSpec) -> SensedModel:
    if cfg_model.name not in MODEL_NAMES:
        raise ConfigError(
            f"unknown model {cfg_model.name!r}: choose one of {list(MODEL_NAMES)} "
            "(e.g. student=vgg7 or teacher=wrn22_4)"
        )
    return build_model(
        cfg_model.name,
        num_classes=spec.num_classes,
        image_size=spec.image_size,
        width=float(cfg_model.width),
        batch_norm=cfg_model.get("batch_norm"),
        init=cfg_model.get("init") or DEFAULT_INIT,
    )


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked from the config, before data or training cost anything."""
    check(cfg, lambda name: method_class(name).Config)
    if cfg.dataset.name not in DATASETS:
        raise ConfigError(f"unknown dataset {cfg.dataset.name!r}: choose one of {sorted(DATASETS)}")
    spec = DATASETS[cfg.dataset.name].spec
    if cfg.stage not in STAGES:
        raise ConfigError(f"stage={cfg.stage!r}: choose one of {list(STAGES)}")
    method = method_class(cfg.method.name)
    student = _model(cfg.student, spec)
    if cfg.stage == "teacher" or method.needs_teacher(cfg.method):
        teacher = _model(cfg.teacher, spec)
        if cfg.stage == "student":
            method.check_pair(cfg.method, teacher.sensing, student.sensing)
    if cfg.teacher_checkpoint and not Path(cfg.teacher_checkpoint).exists():
        raise ConfigError(
            f"teacher_checkpoint={cfg.teacher_checkpoint} does not exist; give a teacher run "
            "directory or its checkpoint.pt"
        )


def prepare(cfg: DictConfig) -> Context:
    """Validate the config and load the data: every check that can fail runs here."""
    validate(cfg)
    device = resolve_device(cfg.runtime.device)
    if device.type == "cpu":
        keep_freed_host_memory()
    try:
        train, evaluation, spec = load_dataset(
            cfg.dataset.name,
            cfg.paths.data,
            split=cfg.dataset.split,
            val_size=cfg.dataset.get("val_size"),
            download=bool(cfg.dataset.get("download", False)),
        )
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from exc
    except ValueError as exc:
        raise ConfigError(f"dataset: {exc}") from exc
    _check_full_batches(cfg, train.labels)
    return Context(cfg, device, train.to(device), evaluation.to(device), spec)


def _check_full_batches(cfg: DictConfig, labels: torch.Tensor) -> None:
    """Each stage of the job trains on at least one batch: training drops a partial last batch,
    so a (sub)set smaller than the batch would fail only when that stage starts, perhaps after
    its teacher and MHAN have trained."""
    batch = int(cfg.optim.batch_size)
    stages = [(s.stage, s.identity["dataset"]) for s in prerequisites(cfg)]
    for stage, identity in [*stages, (cfg.stage, data_identity(cfg, cfg.stage))]:
        images = training_size(labels, identity)
        if images < batch:
            raise ConfigError(
                f"the {stage} stage trains on {images} images, fewer than optim.batch_size="
                f"{batch}, so every epoch would be empty; lower optim.batch_size or train on "
                "more images (dataset.subset)"
            )


def run_owned(
    spec: StageSpec,
    ctx: Context,
    make_task: Callable[[], TrainingTask],
    artifacts: dict[str, str] | None = None,
) -> tuple[RunResult, TrainingTask]:
    """Run one stage as the only owner of its identity (waiting for another owner first)."""
    with owned(ctx.cfg.paths.store, spec) as placed:
        if placed.role == "artifact":
            check_not_failed(placed)
        return StageRun(placed, ctx).execute(make_task, artifacts)


# -- the stages of a job ----------------------------------------------------------------------
def _runtime(cfg: DictConfig) -> dict[str, Any]:
    """How a stage's networks run (not what they compute): every task takes these."""
    return {
        "autocast": torch.bfloat16 if cfg.runtime.get("bf16") else None,
        "channels_last": bool(cfg.runtime.get("channels_last")),
        "compile": bool(cfg.runtime.get("compile")),
    }


def _classifier_task(ctx: Context, model_cfg: Any) -> ClassifierTask:
    """A classifier with no distillation (a teacher, or a student alone)."""
    model = _model(model_cfg, ctx.spec).to(ctx.device)
    return ClassifierTask(
        model,
        Distiller(None, model, None).to(ctx.device),
        **_runtime(ctx.cfg),
    )


def trained_teacher(ctx: Context) -> tuple[SensedModel, str]:
    """The frozen teacher of a student run: a given checkpoint, or the cached artifact."""
    model = _model(ctx.cfg.teacher, ctx.spec).to(ctx.device)
    if ctx.cfg.teacher_checkpoint:
        source = checkpoint_file(ctx.cfg.teacher_checkpoint)
        try:
            state = load_checkpoint(source)["task"]["model"]
        except (CheckpointError, KeyError) as exc:
            raise ConfigError(
                f"teacher_checkpoint={source} is not a teacher checkpoint of mhgd-train "
                f"({type(exc.__cause__ or exc).__name__})"
            ) from None
    else:
        spec = teacher_spec(ctx.cfg, int(ctx.cfg.teacher_seed))
        _, task = run_owned(spec, ctx, lambda: _classifier_task(ctx, ctx.cfg.teacher))
        state, source = task.state_dict()["model"], spec.run_dir
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(
            f"the teacher weights from {source} do not fit teacher={ctx.cfg.teacher.name} "
            f"(width {ctx.cfg.teacher.width}): {exc}"
        ) from exc
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, str(source)


def train_student(
    ctx: Context, run_dir: Path, prerequisites_only: bool = False
) -> RunResult | None:
    """The student stage, after its teacher and its method's pre-stages.

    With ``prerequisites_only`` it stops once the shared artifacts (the teacher, MHGD's MHAN)
    exist: a cluster submission runs that as a job the students depend on.
    """
    cfg = ctx.cfg
    spec = student_spec(cfg, run_dir)
    method_name, _ = canonical_method(cfg)
    method = method_class(method_name)
    method_cfg = cfg.method if method_name == cfg.method.name else None
    teacher, artifacts = None, {}
    if method_cfg is not None and method.needs_teacher(method_cfg):
        teacher, artifacts["teacher"] = trained_teacher(ctx)
    pre_stages = method.pre_stages(method_cfg) if method_cfg is not None else []
    trained: dict[str, dict[str, Any]] = {}
    shape_only = _model(cfg.student, ctx.spec)  # the method's constructor wants a student
    for stage in (s for s in pre_stages if s.shared):
        pre = pre_stage_spec(cfg, stage, None, None)
        # Built inside the stage run, after it seeds torch with the pre-stage's own seed: the
        # artifact's initial weights depend on its key alone, not on the student job.
        _, task = run_owned(
            pre,
            ctx,
            lambda s=stage: (
                method(teacher, shape_only, method_cfg)
                .to(ctx.device)
                .pre_stage_task(s, **_runtime(cfg))
            ),
            dict(artifacts),
        )
        trained[stage.name] = task.state_dict()
        artifacts[stage.name] = str(pre.run_dir)
    if prerequisites_only:
        return None

    with owned(cfg.paths.store, spec) as placed:
        torch.manual_seed(spec.seed)
        student = _model(cfg.student, ctx.spec).to(ctx.device)
        distiller = method(teacher, student, method_cfg).to(ctx.device)
        for stage in pre_stages:
            if stage.shared:
                distiller.load_pre_stage(stage, trained[stage.name])
                continue
            pre = pre_stage_spec(cfg, stage, spec.key, placed.run_dir)
            _, task = StageRun(pre, ctx).execute(
                lambda s=stage: distiller.pre_stage_task(s), dict(artifacts)
            )
            distiller.load_pre_stage(stage, task.state_dict())
            artifacts[stage.name] = str(pre.run_dir)

        probe = None
        if cfg.get("probe_mhan") and distiller.eval_probe() is None:  # MHGD probes its own heads
            probe, artifacts["probe_mhan"] = mhan_probe(ctx, cfg.probe_mhan)

        def make() -> ClassifierTask:
            return ClassifierTask(
                student,
                distiller,
                teacher,
                **_runtime(cfg),
                probe=probe,
            )

        result, _ = StageRun(placed, ctx).execute(make, artifacts)
    return result


# -- graph-KL probe through a cached MHAN (mhgd.methods.mhgd.GraphProbe) ------------------
def mhan_probe(ctx: Context, given: str) -> tuple[GraphProbe, str]:
    """Probe any student through the heads of a finished MHAN of this job's teacher: ``given``
    is the MHAN's run directory, or an MHGD student's (whose MHAN it then uses)."""
    run = RunDir(given)
    record = run.read_record() if run.has_record() else None
    if record is not None and record.stage == "student" and "mhan" in record.artifacts:
        run = RunDir(record.artifacts["mhan"])
        record = run.read_record() if run.has_record() else None
    if record is None or record.stage != "mhan" or not run.is_finished():
        raise ConfigError(
            f"probe_mhan={given}: give the run directory of a finished MHAN, or of an MHGD "
            "student (whose MHAN is then used)"
        )
    built_by = OmegaConf.create(run.read_config())
    if configured_teacher_key(built_by) != configured_teacher_key(ctx.cfg):
        raise ConfigError(
            f"probe_mhan={given} was trained on another teacher than this job's: probe a "
            "student only through an MHAN of its own teacher"
        )
    teacher, _ = trained_teacher(ctx)
    heads = load_checkpoint(run.file(CHECKPOINT_FILE))["task"]["heads"]
    return GraphProbe.from_mhan(teacher, heads, built_by.method), str(run.path)


def main_spec(cfg: DictConfig, run_dir: Path) -> StageSpec:
    """The main stage a job asks for (its identity decides where it really lives)."""
    if cfg.stage == "teacher":
        return teacher_spec(cfg, int(cfg.seed), run_dir)
    return student_spec(cfg, run_dir)


def run(
    cfg: DictConfig,
    run_dir: str | Path,
    *,
    epoch_hook: EpochHook | None = None,
    tags: list[str] | None = None,
    extra_record: dict[str, Any] | None = None,
    prerequisites_only: bool = False,
) -> RunResult | None:
    """Run the job ``cfg`` asks for in ``run_dir``: validate, load data, train what is missing.

    ``epoch_hook`` sees every epoch row of the main stage (a sweep reports to its pruner
    there); ``tags`` and ``extra_record`` are added to every stage's record and W&B run.
    ``prerequisites_only`` builds only the cached artifacts the job needs (returns None).
    A run whose identity already finished (here or in another folder) is not trained again.
    """
    validate(cfg)
    spec = main_spec(cfg, Path(run_dir))
    if not prerequisites_only:
        check_folder(spec)
        if done := finished_result(cfg.paths.store, spec):
            where, result = done
            if where != spec.run_dir.resolve():
                link(spec, where)
            log.info("%s already finished in %s: nothing to train", spec.stage, where)
            return result
    ctx = prepare(cfg)
    ctx.epoch_hook, ctx.tags, ctx.extra_record = epoch_hook, list(tags or []), extra_record or {}
    if threads := cfg.runtime.get("threads"):
        torch.set_num_threads(int(threads))
    if cfg.stage == "teacher":
        if prerequisites_only:
            return None
        result, _ = run_owned(spec, ctx, lambda: _classifier_task(ctx, cfg.teacher))
        return result
    return train_student(ctx, Path(run_dir), prerequisites_only)
