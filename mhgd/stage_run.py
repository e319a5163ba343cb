"""One stage run in its directory: its record, its W&B run, its training and its result.

The pipeline decides *which* stages a job runs and *where* (mhgd.slots); this object runs one
of them: it writes the record before training, mirrors every epoch to the record files and to
W&B, and always leaves a truthful ``result.json`` (finished, failed, preempted, pruned).
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from mhgd.data import Batches, DataSpec, ImageSet, describe_subset, training_set
from mhgd.engine.checkpoint import load_checkpoint
from mhgd.engine.loop import FitOutcome, LoopSettings, TrainingTask, fit
from mhgd.engine.preemption import Preempted, StopRequest
from mhgd.errors import ConfigError
from mhgd.files import this_process
from mhgd.records import RunDir, RunRecord, RunResult, cell_id, git_commit
from mhgd.stages import CHECKPOINT_FILE, StageSpec, plain
from mhgd.tracking import Tracker

log = logging.getLogger(__name__)

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


def build_record(spec: StageSpec, ctx: Context, existing: RunRecord | None) -> RunRecord:
    return RunRecord(
        stage=spec.stage,
        role=spec.role,
        cell_id=cell_id(spec.identity),
        seed=spec.seed,
        artifact_key=spec.key,
        method=spec.method,
        dataset=ctx.cfg.dataset.name,
        model=spec.model,
        teacher=spec.teacher,
        hparams=spec.hparams,
        identity=spec.identity,
        wandb_id=existing.wandb_id if existing else uuid.uuid4().hex[:16],
        wandb_project=ctx.cfg.logger.get("project"),
        git_commit=git_commit(),
        tags=sorted({spec.stage, spec.method, ctx.cfg.dataset.name, ctx.cfg.name, *ctx.tags}),
        extra=dict(ctx.extra_record),
    )


class StageRun:
    """Trains ``spec`` in ``spec.run_dir``, resuming its checkpoint, or reuses it if finished.

    The caller must own the run (mhgd.slots) for as long as this runs.
    """

    def __init__(self, spec: StageSpec, ctx: Context) -> None:
        self.spec = spec
        self.ctx = ctx
        self.dir = RunDir(spec.run_dir)

    def execute(
        self, make_task: Callable[[], TrainingTask], artifacts: Mapping[str, str] | None = None
    ) -> tuple[RunResult, TrainingTask]:
        spec, ctx, run = self.spec, self.ctx, self.dir
        existing = run.read_record() if run.has_record() else None
        record = build_record(spec, ctx, existing)
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
            log.info("%s %s already finished in %s: reusing it", spec.role, spec.stage, run.path)
            task.load_state_dict(load_checkpoint(checkpoint)["task"])
            return previous, task

        run.write_config({**plain(ctx.cfg), "stage": spec.stage, "seed": spec.seed})
        run.write_record(record)
        run.add_attempt({**this_process(), "epochs_done": previous.epochs_done if previous else 0})
        tracker = Tracker.start(plain(ctx.cfg), spec.run_dir, record, spec.identity)
        record.extra["wandb"] = tracker.status  # whether W&B logged, where, or why not
        run.write_record(record)
        tracker.use_artifacts(record.artifacts)
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

        def end(final: RunResult, exit_code: int) -> None:
            run.write_result(final)
            tracker.log_summary(final)
            tracker.finish(exit_code=exit_code)

        stop = StopRequest()
        with stop.installed():
            try:
                outcome = fit(
                    task,
                    schedule=spec.schedule,
                    train_batches=lambda epoch: Batches(
                        train,
                        int(ctx.cfg.optim.batch_size),
                        device=ctx.device,
                        generator=_epoch_generator(spec.seed, epoch),
                        pad=ctx.spec.pad,
                        drop_last=True,
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
                end(result("preempted", None), exit_code=1)
                stop.hand_over()
                raise
            except KeyboardInterrupt:
                end(result("preempted", None), exit_code=1)
                raise
            except BaseException as exc:
                status = getattr(exc, "run_status", "failed")
                end(
                    result(status, None, error=f"{type(exc).__name__}: {exc}"),
                    exit_code=0 if status == "pruned" else 1,
                )
                if status == "failed":
                    run.write_error(traceback.format_exc())
                raise
        run.write_metrics(outcome.history)
        final = result("finished", outcome)
        run.write_result(final)
        tracker.log_summary(final)
        tracker.log_checkpoint(record, checkpoint)
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


def check_not_failed(spec: StageSpec) -> None:
    """A failed artifact (diverged, or a bug) is never handed on, nor retried behind the
    user's back: the same config would fail again."""
    result = RunDir(spec.run_dir).read_result()
    if result is not None and result.status == "failed":
        raise ConfigError(
            f"the {spec.stage} this job needs failed in {spec.run_dir}: {result.error}. "
            f"See {spec.run_dir}/error.txt; fix the cause, then remove that folder to retrain it"
        )
