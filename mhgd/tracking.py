"""Weights & Biases mirroring of a run. The run record on disk stays the source of truth.

W&B must never cost a result: every call is guarded, and the first failure switches the
tracker off with one warning while training carries on. On a machine without an API key or
without network the run is logged offline (``wandb sync`` uploads it later).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mhgd.records import RunRecord, RunResult, redact

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")


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


class Tracker:
    """One W&B run per stage run, resumed under the same id when the stage resumes."""

    def __init__(self, run: Any | None) -> None:
        self._run = run

    @property
    def active(self) -> bool:
        return self._run is not None

    @classmethod
    def start(
        cls,
        logger_cfg: Mapping[str, Any],
        run_dir: Path,
        record: RunRecord,
        config: Mapping[str, Any],
        name: str,
    ) -> Tracker:
        mode = resolve_mode(str(logger_cfg.get("mode", "auto")))
        if mode == "disabled":
            return cls(None)
        try:
            import wandb

            run = wandb.init(
                project=logger_cfg.get("project") or "mhgd",
                entity=logger_cfg.get("entity") or None,
                dir=str(run_dir),
                id=record.wandb_id,
                name=name,
                group=record.cell_id,
                job_type=record.stage,
                tags=list(record.tags),
                config={
                    **redact(dict(config)),
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
                        **record.extra,  # e.g. the sweep's study and trial, the SLURM job
                    },
                },
                mode=mode,
                resume="allow",
                reinit="finish_previous",
                settings=wandb.Settings(silent=True, x_disable_stats=True, console="off"),
            )
        except Exception as exc:  # a W&B failure must never kill training
            log.warning("W&B disabled for this run: %s: %s", type(exc).__name__, exc)
            return cls(None)
        if mode == "offline":
            log.info("W&B offline run in %s (upload later: wandb sync %s)", run.dir, run_dir)
        return cls(run)

    def _guard(self, action: str, call: Any, *args: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        try:
            call(*args, **kwargs)
        except Exception as exc:
            log.warning(
                "W&B %s failed, tracking stops here: %s: %s", action, type(exc).__name__, exc
            )
            self._run = None

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
