"""The W&B adapter: runs of a W&B project as rows of the same runs table the disk gives.

A stage run's W&B config is its identity (the config its artifact key hashes: ``dataset``,
``model``, ``method``, ``schedule``, ...) plus ``config["run"]``, the record fields a report
groups by; its group is the cell id, its job type the stage, and its summary holds ``status``,
``last_top1`` and ``best_top1``. Fields of the record that older runs did not log in
``config["run"]`` are taken from the identity where it has them; what cannot be recovered is
left empty, with a warning naming it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from mhgd.errors import ConfigError
from mhgd.report.schema import BASE_COLUMNS, HPARAM_COLUMNS, run_frame, subset_label

# W&B run states for runs that ended before writing our summary.
_STATES = {"finished": "finished", "running": "running", "crashed": "failed", "failed": "failed"}


def _name(node: Any) -> str | None:
    return node.get("name") if isinstance(node, Mapping) else None


def _role(stage: str, logged: Mapping[str, Any]) -> str:
    """Students are always main runs and pre-stages always artifacts; a teacher may be either
    (a cached teacher and a main teacher of the same seed share a config), so older runs that
    did not log their role count as main teachers."""
    if "role" in logged:
        return str(logged["role"])
    return "artifact" if stage not in ("teacher", "student") else "main"


def wandb_row(run: Any) -> tuple[dict[str, Any], list[str]]:
    """One ``wandb.apis.public.Run`` as a row, and the record fields it had to guess."""
    config = dict(run.config)
    logged = dict(config.get("run") or {})
    summary = dict(run.summary_metrics or {})
    stage = logged.get("stage") or run.job_type
    guessed = [
        key for key in ("role", "teacher", "model", "method", "dataset") if key not in logged
    ]
    dataset = config.get("dataset") or {}
    hparams = logged.get("hparams")
    if not isinstance(hparams, Mapping):  # logged before runs named their hparams: MHGD's only
        hparams = {key: logged[key] for key in HPARAM_COLUMNS if key in logged}
    hparams = {k: v for k, v in hparams.items() if k not in BASE_COLUMNS}  # as on disk
    top1 = "last_top1" in summary
    status = summary.get("status") or _STATES.get(run.state, "failed")
    return {
        "cell_id": logged.get("cell_id") or run.group,
        "stage": stage,
        "role": _role(stage, logged),
        "method": logged.get("method") or _name(config.get("method")) or "none",
        "teacher": logged.get("teacher"),
        "student": logged.get("model") or _name(config.get("model")),
        "dataset": logged.get("dataset") or _name(dataset),
        "split": dataset.get("split") if isinstance(dataset, Mapping) else None,
        "subset": subset_label(logged.get("train_subset")),
        **{key: None for key in HPARAM_COLUMNS},
        **hparams,
        "seed": logged.get("seed", config.get("seed")),
        "status": status,
        "last_top1": summary.get("last_top1") if top1 else None,
        "best_top1": summary.get("best_top1") if top1 else None,
        # as on disk: a graph KL counts from finished runs only
        "last_graph_kl": summary.get("eval/graph_kl") if top1 and status == "finished" else None,
        "graph_kl_mhan": None,  # the W&B config does not carry a run's artifacts
        "epochs_done": summary.get("epoch", 0),
        "epochs": (config.get("schedule") or {}).get("epochs"),
        "wandb_id": run.id,
        "artifact_key": logged.get("artifact_key"),
        "run_dir": None,
        "wandb_path": "/".join(run.path),
    }, guessed


def frame_from_wandb_runs(runs: Iterable[Any]) -> pd.DataFrame:
    """The runs table from W&B public-API run objects."""
    rows, guessed = [], set()
    for run in runs:
        row, missing = wandb_row(run)
        rows.append(row)
        guessed.update(missing)
    if "teacher" in guessed or "role" in guessed:
        warnings.warn(
            f"W&B runs without {sorted(guessed)} in config['run']: teacher names are unknown "
            "(distilled students match no table row) and cached teachers count as main "
            "teachers; runs logged by a current mhgd carry these fields",
            stacklevel=2,
        )
    return run_frame(rows)


def _api() -> Any:
    import wandb

    return wandb.Api(timeout=60)


def runs_from_wandb(project: str, filters: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """All runs of ``entity/project`` matching the W&B (MongoDB-style) ``filters``."""
    import wandb

    if project.count("/") != 1:
        raise ConfigError(f"wandb:{project}: write the W&B project as wandb:<entity>/<project>")
    try:
        return frame_from_wandb_runs(_api().runs(project, filters=dict(filters or {})))
    except wandb.errors.Error as exc:
        raise ConfigError(
            f"cannot read the W&B project {project}: {exc} (log in with `wandb login` and "
            "check the entity and project names)"
        ) from exc


def wandb_history(path: str) -> list[dict[str, Any]]:
    """The epoch rows a run logged (its metrics.jsonl, mirrored), in epoch order."""
    rows = [dict(row) for row in _api().run(path).scan_history() if "epoch" in row]
    return sorted(rows, key=lambda row: row["epoch"])
