"""Weights & Biases mirroring of a run. The run record on disk stays the source of truth.

W&B must never cost a result: every call is guarded, and the first failure switches the
tracker off with one warning while training carries on. On a machine without an API key or
without network the run is logged offline (``wandb sync`` uploads it later). An unreachable or
hanging server costs one short wait per job (``logger.init_timeout_s``), not one per stage: the
first failure turns W&B off for the rest of the process, and ``Tracker.status`` (kept in the
run record) says why.

What a W&B user expects to find: runs grouped by experiment and cell with readable names
(``table4-vgg-heads/student vgg7 mhgd heads=4 ... [3fa2c1]``, ``student mhgd heads=4 beta=1.0
s0``), the full resolved config with the runtime settings (bf16, channels_last, compile, the
device, runs per GPU), the teacher -> MHAN -> student lineage as checkpoint artifacts logged by
reference, best/last top-1 summaries, and system metrics and console output (switchable in
conf/logger/wandb.yaml).
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mhgd.records import RunDir, RunRecord, RunResult, stable_hash
from mhgd.secrets import mask_text, redact

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_INIT_TIMEOUT_S = 10.0
CHECKPOINT_FILE = "checkpoint.pt"
RUNS_PER_GPU_ENV = "MHGD_RUNS_PER_GPU"  # set by a launcher that packs several runs on a GPU
# Why W&B is off for the rest of this process (an unreachable or hanging server): later stages
# of the same job skip it at once instead of waiting again.
_off_reason: str | None = None


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    return netrc.is_file() and host in netrc.read_text()


def _server_reachable(timeout: float = 2.0) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(requested: str) -> str:
    """'auto' becomes online only with an API key and a reachable server; WANDB_MODE wins."""
    if requested not in MODES:
        raise ValueError(f"logger.mode={requested!r} is not one of {MODES}")
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if _has_api_key() and _server_reachable() else "offline"


# -- what a run is called and what its config holds ---------------------------------------------
def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _hparams(record: RunRecord) -> list[str]:
    return [f"{k}={_short(v)}" for k, v in sorted(record.hparams.items())]


def run_name(record: RunRecord) -> str:
    """Stage, its method and key hyper-parameters, seed: ``student mhgd heads=4 beta=1 s0``."""
    parts = [record.stage]
    if record.stage in ("teacher", "student") and record.method == "none":
        parts.append(record.model)
    elif record.stage == "student":
        parts.append(record.method)
    return " ".join([*parts, *_hparams(record), f"s{record.seed}"])


def group_name(experiment: str, record: RunRecord) -> str:
    """Experiment and cell: every seed of one setting lands in one readable group."""
    models = f"{record.teacher}->{record.model}" if record.teacher else record.model
    label = " ".join([record.stage, models, record.method, *_hparams(record)])
    group = mask_text(f"{experiment}/{label} [{record.cell_id[:6]}]")
    return group if len(group) <= 128 else f"{group[:119]} [{record.cell_id[:6]}]"


def device_name(requested: str) -> str:
    """The accelerator a run trains on, as W&B users split runs by it (e.g. 'NVIDIA H200')."""
    import torch

    if requested != "cpu" and torch.cuda.is_available():
        index = int(requested.split(":")[1]) if ":" in requested else torch.cuda.current_device()
        return torch.cuda.get_device_name(index)
    return platform.processor() or platform.machine() or "cpu"


def runtime_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """How a run trains (not what): the keys runs are split by on a GPU cluster."""
    runtime = cfg.get("runtime") or {}
    per_gpu = os.environ.get(RUNS_PER_GPU_ENV) or runtime.get("runs_per_gpu")
    return {
        "device": device_name(str(runtime.get("device", "auto"))),
        "bf16": bool(runtime.get("bf16", False)),
        "channels_last": bool(runtime.get("channels_last", False)),
        "compile": bool(runtime.get("compile", False)),
        "threads": runtime.get("threads"),
        "runs_per_gpu": int(per_gpu) if per_gpu else 1,
    }


def _checkpoint_artifact(stage: str, key: str, checkpoint: Path) -> Any:
    """A checkpoint as a W&B artifact by reference: the file stays where it is, W&B keeps its
    path. Producer and consumers build the same artifact, so they meet in one lineage node."""
    import wandb

    artifact = wandb.Artifact(f"{stage}-{key}", type=stage, metadata={"path": str(checkpoint)})
    artifact.add_reference(checkpoint.resolve().as_uri(), checksum=False)
    return artifact


def _input_artifact(path: str) -> Any | None:
    """The artifact of an input stage (a teacher, an MHAN) from its run directory or file."""
    given = Path(path)
    run_dir = given if given.is_dir() else given.parent
    checkpoint = given if given.is_file() else given / CHECKPOINT_FILE
    if not checkpoint.is_file():
        return None
    run = RunDir(run_dir)
    if run.has_record():
        record = run.read_record()
        return _checkpoint_artifact(record.stage, record.artifact_key, checkpoint)
    return _checkpoint_artifact("checkpoint", stable_hash(str(checkpoint.resolve())), checkpoint)


def _init(
    wandb: Any,
    cfg: Mapping[str, Any],
    logger_cfg: Mapping[str, Any],
    run_dir: Path,
    record: RunRecord,
    identity: Mapping[str, Any],
    mode: str,
) -> Any:
    """``wandb.init`` for a stage run: names, group, tags, config and settings."""
    timeout = float(logger_cfg.get("init_timeout_s", DEFAULT_INIT_TIMEOUT_S))
    return wandb.init(
        project=logger_cfg.get("project") or "mhgd",
        entity=logger_cfg.get("entity") or None,
        dir=str(run_dir),
        id=record.wandb_id,
        name=run_name(record),
        group=group_name(str(cfg.get("name", "default")), record),
        job_type=record.stage,
        tags=[mask_text(tag) for tag in record.tags],
        config=redact(
            {
                **dict(identity),
                "runtime": runtime_settings(cfg),
                "job": dict(cfg),
                "run": {
                    "cell_id": record.cell_id,
                    "seed": record.seed,
                    "stage": record.stage,
                    "role": record.role,
                    "method": record.method,
                    "dataset": record.dataset,
                    "model": record.model,
                    "teacher": record.teacher,
                    "artifact_key": record.artifact_key,
                    **record.hparams,
                    "hparams": dict(record.hparams),  # which keys are hparams, for reports
                    **record.extra,  # e.g. the sweep's study and trial, the SLURM job
                },
            }
        ),
        mode=mode,
        resume="allow",
        reinit="finish_previous",
        settings=wandb.Settings(
            silent=True,
            init_timeout=timeout,
            x_disable_stats=not logger_cfg.get("system_metrics", True),
            console="auto" if logger_cfg.get("console", True) else "off",
        ),
    )


@contextmanager
def _masked_argv() -> Iterator[None]:
    """W&B records the command line (``sys.argv``) in the run's metadata at init: mask it."""
    original = sys.argv
    sys.argv = [original[0], *(mask_text(arg) for arg in original[1:])]
    try:
        yield
    finally:
        sys.argv = original


class Tracker:
    """One W&B run per stage run, resumed under the same id when the stage resumes.

    ``status`` is what the run record keeps about W&B: its mode and where it logs, or that it
    is off and why.
    """

    def __init__(self, run: Any | None, status: dict[str, Any]) -> None:
        self._run = run
        self.status = status

    @property
    def active(self) -> bool:
        return self._run is not None

    @classmethod
    def start(
        cls,
        cfg: Mapping[str, Any],
        run_dir: Path,
        record: RunRecord,
        identity: Mapping[str, Any],
    ) -> Tracker:
        """Start (or resume) the W&B run of a stage. ``cfg`` is the job's resolved config."""
        global _off_reason
        logger_cfg = cfg.get("logger") or {}
        mode = resolve_mode(str(logger_cfg.get("mode", "auto")))
        if mode == "disabled":
            return cls(None, {"mode": "disabled", "reason": "logger.mode/WANDB_MODE"})
        if _off_reason is not None:
            return cls(None, {"mode": "off", "reason": _off_reason})
        try:
            import wandb

            with _masked_argv():
                run = _init(wandb, cfg, logger_cfg, run_dir, record, identity, mode)
            for metric in ("score", "eval/top1", "eval/cos"):
                run.define_metric(metric, step_metric="epoch", summary="max,last")
        except Exception as exc:  # a W&B failure must never kill training
            _off_reason = f"wandb.init failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
            log.warning("W&B off for this job: %s", _off_reason)
            return cls(None, {"mode": "off", "reason": _off_reason})
        where = run.url if mode == "online" else str(run.settings.sync_dir)
        if mode == "offline":
            log.info("W&B offline run in %s (upload later: wandb sync %s)", where, where)
        return cls(run, {"mode": mode, "where": where})

    def _guard(self, action: str, call: Any, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            call(*args, **kwargs)
        except Exception as exc:
            log.warning(
                "W&B %s failed, tracking stops here: %s: %s", action, type(exc).__name__, exc
            )
            self.status = {"mode": "off", "reason": f"W&B {action} failed: {exc}"}
            self._run = None

    def use_artifacts(self, artifacts: Mapping[str, str]) -> None:
        """Declare the stages this one learns from (run directories or checkpoint files)."""

        def use() -> None:
            for path in artifacts.values():
                artifact = _input_artifact(path)
                if artifact is None:
                    continue
                if self._run.settings._offline:  # use_artifact refuses offline runs; this is
                    # what it does for a new artifact, recorded for `wandb sync`.
                    self._run._log_artifact(artifact, is_user_created=True, use_after_commit=True)
                else:
                    self._run.use_artifact(artifact)

        self._guard("use_artifact", use)

    def log_checkpoint(self, record: RunRecord, checkpoint: Path) -> None:
        """The finished stage's checkpoint, by reference, as this run's output artifact."""
        self._guard(
            "log_artifact",
            lambda: self._run.log_artifact(
                _checkpoint_artifact(record.stage, record.artifact_key, checkpoint)
            ),
        )

    def log_epoch(self, row: Mapping[str, Any]) -> None:
        self._guard("log", lambda: self._run.log(dict(row), step=int(row["epoch"])))

    def log_summary(self, result: RunResult) -> None:
        def update() -> None:
            self._run.summary.update(
                {
                    "status": result.status,
                    f"last_{result.score_name}": result.last_score,
                    f"best_{result.score_name}": result.best_score,
                    "best_epoch": result.best_epoch,
                    "wall_time_s": result.wall_time_s,
                }
            )

        self._guard("summary", update)

    def finish(self, exit_code: int = 0) -> None:
        self._guard("finish", lambda: self._run.finish(exit_code=exit_code))
        self._run = None
