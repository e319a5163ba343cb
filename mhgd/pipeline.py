"""Stages and the artifact store: teacher -> (method pre-stages, e.g. MHAN) -> student.

A job trains one *main* stage in its own run directory (a teacher, or a student). What a student
needs first (its teacher, MHGD's MHAN) is an *artifact*: a stage run addressed by the hash of the
configuration that produces it, kept in ``paths.store`` and reused by every job that asks for
the same one. A file lock makes sure two jobs never train the same artifact at once; the second
waits and then reuses it. Every stage run, main or artifact, has its own run record and W&B run.
"""

from __future__ import annotations

import fcntl
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from mhgd.data import (
    DATASETS,
    Batches,
    DataSpec,
    ImageSet,
    describe_subset,
    load_dataset,
    training_set,
)
from mhgd.engine.checkpoint import load_checkpoint
from mhgd.engine.loop import FitOutcome, LoopSettings, TrainingTask, fit
from mhgd.engine.preemption import Preempted, StopRequest
from mhgd.engine.tasks import ClassifierTask
from mhgd.errors import ConfigError
from mhgd.methods import Distiller, method_class
from mhgd.methods.mhgd import GraphProbe
from mhgd.models import DEFAULT_INIT, MODEL_NAMES, SensedModel, build_model
from mhgd.records import RunDir, RunRecord, RunResult, cell_id, git_commit
from mhgd.stages import (
    CHECKPOINT_FILE,
    StageSpec,
    checkpoint_file,
    given_teacher_key,
    plain,
    pre_stage_spec,
    student_spec,
    teacher_spec,
)
from mhgd.tracking import Tracker

log = logging.getLogger(__name__)

STAGES = ("teacher", "student")
EpochHook = Callable[[dict[str, Any]], None]


@dataclass
class Context:
    """What every stage of a job shares: the config, the data on the device, the settings."""

    cfg: DictConfig
    device: torch.device
    train: ImageSet
    eval: ImageSet
    spec: DataSpec
    epoch_hook: EpochHook | None = None
    tags: list[str] = field(default_factory=list)
    extra_record: dict[str, Any] = field(default_factory=dict)


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
    return Context(cfg, device, train.to(device), evaluation.to(device), spec)


# -- running one stage ------------------------------------------------------------------------
def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """Data order and augmentation of an epoch depend on (seed, epoch) only: exact resume."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _loop_settings(cfg: DictConfig, weight_decay: float | None = None) -> LoopSettings:
    """SGD settings from ``optim``; a stage with its own weight decay (the MHAN) keeps it."""
    return LoopSettings(
        momentum=float(cfg.optim.momentum),
        weight_decay=float(cfg.optim.weight_decay if weight_decay is None else weight_decay),
        progress=cfg.runtime.get("progress"),
    )


def _record(spec: StageSpec, ctx: Context, existing: RunRecord | None) -> RunRecord:
    identity_cell = cell_id(spec.identity)
    if existing is not None and existing.artifact_key != spec.key:
        raise ConfigError(
            f"{spec.run_dir} already holds a different run ({existing.stage}, cell "
            f"{existing.cell_id}, seed {existing.seed}); this job is cell {identity_cell} seed "
            f"{spec.seed}. Use another output directory (e.g. another `name=`) or remove it."
        )
    return RunRecord(
        stage=spec.stage,
        role=spec.role,
        cell_id=identity_cell,
        seed=spec.seed,
        artifact_key=spec.key,
        method=spec.method,
        dataset=ctx.cfg.dataset.name,
        model=spec.model,
        teacher=spec.teacher,
        hparams=spec.hparams,
        wandb_id=existing.wandb_id if existing else uuid.uuid4().hex[:16],
        wandb_project=ctx.cfg.logger.get("project"),
        git_commit=git_commit(),
        tags=sorted({spec.stage, spec.method, ctx.cfg.dataset.name, ctx.cfg.name, *ctx.tags}),
        extra=dict(ctx.extra_record),
    )


def run_stage(
    spec: StageSpec,
    ctx: Context,
    make_task: Callable[[], TrainingTask],
    artifacts: Mapping[str, str] | None = None,
) -> tuple[RunResult, TrainingTask]:
    """Train one stage in ``spec.run_dir`` (resuming it), keeping its record and W&B run."""
    run = RunDir(spec.run_dir)
    existing = run.read_record() if run.has_record() else None
    record = _record(spec, ctx, existing)
    record.artifacts = dict(artifacts or {})
    # -- training subset (mhgd.data.subset): the images this stage trains on
    train = training_set(ctx.train, spec.identity["dataset"], spec.seed)
    if (subset := describe_subset(spec.identity["dataset"], len(train))) is not None:
        record.extra["train_subset"] = subset
    torch.manual_seed(spec.seed)
    task = make_task()
    checkpoint = spec.run_dir / CHECKPOINT_FILE
    previous = run.read_result()
    if previous is not None and previous.status == "finished":
        log.info("%s %s already finished in %s: reusing it", spec.role, spec.stage, spec.run_dir)
        task.load_state_dict(load_checkpoint(checkpoint)["task"])
        return previous, task

    run.write_config({**plain(ctx.cfg), "stage": spec.stage, "seed": spec.seed})
    run.write_record(record)
    name = f"{spec.stage}-{record.cell_id}-s{spec.seed}"
    tracker = Tracker.start(ctx.cfg.logger, spec.run_dir, record, spec.identity, name)
    started = time.time()
    elapsed_before = previous.wall_time_s if previous else 0.0

    def result(status: str, outcome: FitOutcome | None, error: str | None = None) -> RunResult:
        history = outcome.history if outcome else run.read_metrics()
        best = max(history, key=lambda row: row["score"]) if history else None
        return RunResult(
            status=status,
            epochs_done=len(history),
            epochs=spec.schedule.epochs,
            score_name=task.score_name,
            last_score=history[-1]["score"] if history else None,
            best_score=best["score"] if best else None,
            best_epoch=best["epoch"] if best else None,
            wall_time_s=elapsed_before + time.time() - started,
            error=error,
        )

    def after_epoch(history: list[dict[str, Any]]) -> None:
        row = history[-1]
        run.write_metrics(history)
        tracker.log_epoch(row)
        run.write_result(result("running", None))
        if spec.role == "main" and ctx.epoch_hook is not None:
            ctx.epoch_hook(row)

    stop = StopRequest()
    with stop.installed():
        try:
            outcome = fit(
                task,
                schedule=spec.schedule,
                train_batches=lambda epoch: iter(
                    Batches(
                        train,
                        int(ctx.cfg.optim.batch_size),
                        device=ctx.device,
                        generator=_epoch_generator(spec.seed, epoch),
                        pad=ctx.spec.pad,
                        drop_last=True,
                    )
                ),
                eval_batches=lambda: Batches(
                    ctx.eval, int(ctx.cfg.optim.batch_size), device=ctx.device
                ),
                checkpoint=checkpoint,
                settings=_loop_settings(ctx.cfg, spec.weight_decay),
                stop=stop,
                on_epoch=after_epoch,
            )
        except Preempted:
            final = result("preempted", None)
            run.write_result(final)
            tracker.log_summary(final)
            tracker.finish(exit_code=1)
            stop.hand_over()
            raise
        except BaseException as exc:
            status = getattr(exc, "run_status", "failed")
            final = result(status, None, error=f"{type(exc).__name__}: {exc}")
            run.write_result(final)
            if status == "failed":
                run.write_error(traceback.format_exc())
            tracker.log_summary(final)
            tracker.finish(exit_code=0 if status == "pruned" else 1)
            raise
    run.write_metrics(outcome.history)
    final = result("finished", outcome)
    run.write_result(final)
    tracker.log_summary(final)
    tracker.finish()
    log.info(
        "%s %s finished: last %s %.2f, best %.2f (epoch %s) -> %s",
        spec.role,
        spec.stage,
        final.score_name,
        final.last_score,
        final.best_score,
        final.best_epoch,
        spec.run_dir,
    )
    return final, task


@contextmanager
def artifact_lock(run_dir: Path) -> Iterator[None]:
    """Exclusive across processes and nodes (flock works on local disks and NFS)."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.with_name(run_dir.name + ".lock"), "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another job is training %s; waiting for it", run_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- the stages of a job ----------------------------------------------------------------------
def _autocast(cfg: DictConfig) -> torch.dtype | None:
    return torch.bfloat16 if cfg.runtime.get("bf16") else None


def train_classifier(
    ctx: Context, spec: StageSpec, model_cfg: Any
) -> tuple[RunResult, TrainingTask]:
    """A classifier stage with no distillation (a teacher, or a student alone)."""

    def make() -> ClassifierTask:
        model = _model(model_cfg, ctx.spec).to(ctx.device)
        return ClassifierTask(
            model,
            Distiller(None, model, None).to(ctx.device),
            autocast=_autocast(ctx.cfg),
            channels_last=bool(ctx.cfg.runtime.get("channels_last")),
        )

    return run_stage(spec, ctx, make)


def trained_teacher(ctx: Context) -> tuple[SensedModel, str]:
    """The frozen teacher of a student run: a given checkpoint, or the cached artifact."""
    model = _model(ctx.cfg.teacher, ctx.spec).to(ctx.device)
    if ctx.cfg.teacher_checkpoint:
        source = checkpoint_file(ctx.cfg.teacher_checkpoint)
        state = load_checkpoint(source)["task"]["model"]
    else:
        spec = teacher_spec(ctx.cfg, int(ctx.cfg.teacher_seed))
        with artifact_lock(spec.run_dir):
            _, task = train_classifier(ctx, spec, ctx.cfg.teacher)
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
    finished = RunDir(run_dir).read_result()
    if finished is not None and finished.status == "finished" and not prerequisites_only:
        log.info("student already finished in %s: nothing to do", run_dir)
        return finished
    method = method_class(cfg.method.name)
    teacher, artifacts = None, {}
    if method.needs_teacher(cfg.method):
        teacher, artifacts["teacher"] = trained_teacher(ctx)
    torch.manual_seed(spec.seed)
    student = _model(cfg.student, ctx.spec).to(ctx.device)
    distiller = method(teacher, student, cfg.method).to(ctx.device)
    for stage in method.pre_stages(cfg.method):
        if prerequisites_only and not stage.shared:
            continue
        pre = pre_stage_spec(cfg, stage, spec.key, run_dir)
        with artifact_lock(pre.run_dir) if stage.shared else nullcontext():
            _, task = run_stage(pre, ctx, lambda s=stage: distiller.pre_stage_task(s))
        distiller.load_pre_stage(stage, task.state_dict())
        artifacts[stage.name] = str(pre.run_dir)
    if prerequisites_only:
        return None
    probe = None
    if cfg.get("probe_mhan") and distiller.eval_probe() is None:  # MHGD probes its own heads
        probe, artifacts["probe_mhan"] = mhan_probe(ctx, cfg.probe_mhan)

    def make() -> ClassifierTask:
        return ClassifierTask(
            student,
            distiller,
            teacher,
            autocast=_autocast(cfg),
            channels_last=bool(cfg.runtime.get("channels_last")),
            probe=probe,
        )

    result, _ = run_stage(spec, ctx, make, artifacts)
    return result


# -- graph-KL probe through a cached MHAN (mhgd.methods.mhgd.GraphProbe) ------------------
def _teacher_identity(cfg: DictConfig) -> str:
    if cfg.teacher_checkpoint:
        return given_teacher_key(cfg.teacher_checkpoint)
    return teacher_spec(cfg, int(cfg.teacher_seed)).key


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
    if _teacher_identity(built_by) != _teacher_identity(ctx.cfg):
        raise ConfigError(
            f"probe_mhan={given} was trained on another teacher than this job's: probe a "
            "student only through an MHAN of its own teacher"
        )
    teacher, _ = trained_teacher(ctx)
    heads = load_checkpoint(run.file(CHECKPOINT_FILE))["task"]["heads"]
    return GraphProbe.from_mhan(teacher, heads, built_by.method), str(run.path)


def offer_to_store(ctx: Context, spec: StageSpec) -> None:
    """Let students reuse a finished teacher run instead of training the same teacher again."""
    slot = teacher_spec(ctx.cfg, spec.seed).run_dir
    with artifact_lock(slot):
        if not slot.exists():
            slot.symlink_to(spec.run_dir.resolve(), target_is_directory=True)
            log.info("teacher %s is now the cached teacher for its students", spec.run_dir)


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
    """
    ctx = prepare(cfg)
    ctx.epoch_hook, ctx.tags, ctx.extra_record = epoch_hook, list(tags or []), extra_record or {}
    if threads := cfg.runtime.get("threads"):
        torch.set_num_threads(int(threads))
    if cfg.stage == "teacher":
        if prerequisites_only:
            return None
        spec = teacher_spec(cfg, int(cfg.seed), Path(run_dir))
        result, _ = train_classifier(ctx, spec, cfg.teacher)
        offer_to_store(ctx, spec)
        return result
    return train_student(ctx, Path(run_dir), prerequisites_only)
