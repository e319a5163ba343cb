"""Runs into one table: one row per run, the same columns whether it came from disk or W&B.

On disk the run records are the source of truth (``mhgd.records``). A directory may be reached
twice (a finished main teacher is also linked into the artifact store, a run folder may have
been copied), so rows are deduplicated by the real path of the run folder and by W&B run id,
which a run keeps for life. Two *different* runs of the same cell and seed are not duplicates
of one run: they stay, and the aggregation flags them.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import yaml

from mhgd.errors import ConfigError
from mhgd.records import (
    CONFIG_FILE,
    METRICS_FILE,
    RECORD_FILE,
    RecordError,
    RunDir,
    RunRecord,
    find_runs,
)
from mhgd.report.schema import (
    BASE_COLUMNS,
    HPARAM_COLUMNS,
    run_frame,
    subset_label,
)
from mhgd.report.wandb_source import runs_from_wandb, wandb_history

WANDB_PREFIX = "wandb:"


def read_config(run: RunDir) -> dict[str, Any]:
    path = run.file(CONFIG_FILE)
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RecordError(path, f"unreadable or truncated YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise RecordError(path, "not a YAML mapping (empty or truncated?)")
    return config


def read_metrics(run: RunDir) -> list[dict[str, Any]]:
    path = run.file(METRICS_FILE)
    if not path.is_file():
        return []
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(path, f"unreadable or truncated JSON lines ({exc})") from exc
    if not all(isinstance(row, dict) for row in rows):
        raise RecordError(path, "a line is not a JSON object")
    return rows


def _last_graph_kl(run: RunDir, finished: bool) -> float | None:
    """The last epoch's held-out graph KL, if the run measured it (a bad metrics.jsonl only
    costs this column: accuracy comes from result.json)."""
    if not finished:
        return None
    try:
        rows = read_metrics(run)
    except RecordError as exc:
        warnings.warn(f"graph KL not read: {exc}", stacklevel=3)
        return None
    value = rows[-1].get("eval/graph_kl") if rows else None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _probe_mhan(record: RunRecord) -> str | None:
    """The MHAN whose heads measured a student's graph KL: a probe's, else its own."""
    path = record.artifacts.get("probe_mhan") or record.artifacts.get("mhan")
    return Path(path).name if path else None


def disk_row(run: RunDir) -> dict[str, Any]:
    """One run directory as a row; a run that never reported an epoch counts as running.

    Raises RecordError when record.json, result.json or config.yaml cannot be used.
    """
    record = run.read_record()
    result = run.read_result()
    dataset = read_config(run).get("dataset") or {}
    top1 = result is not None and result.score_name == "top1"
    graph_kl = _last_graph_kl(run, top1 and result.status == "finished")
    clash = sorted(set(record.hparams) & set(BASE_COLUMNS))
    if clash:
        raise RecordError(run.file(RECORD_FILE), f"hparams {clash} shadow run-table columns")
    return {
        "cell_id": record.cell_id,
        "stage": record.stage,
        "role": record.role,
        "method": record.method,
        "teacher": record.teacher,
        "student": record.model,
        "dataset": record.dataset,
        "split": dataset.get("split") if isinstance(dataset, dict) else None,
        "subset": subset_label(record.extra.get("train_subset")),
        **{key: None for key in HPARAM_COLUMNS},
        **record.hparams,
        "seed": record.seed,
        "status": result.status if result else "running",
        "last_top1": result.last_score if top1 else None,
        "best_top1": result.best_score if top1 else None,
        "last_graph_kl": graph_kl,
        "graph_kl_mhan": _probe_mhan(record) if graph_kl is not None else None,
        "epochs_done": result.epochs_done if result else 0,
        "epochs": result.epochs if result else None,
        "wandb_id": record.wandb_id,
        "artifact_key": record.artifact_key,
        "run_dir": str(run.path),
        "wandb_path": None,
    }


def runs_from_disk(roots: Sequence[str | Path]) -> pd.DataFrame:
    """Every run below the given directories, each physical run once.

    A run whose record.json, result.json or config.yaml is unreadable, truncated or of a newer
    schema is left out with one warning naming the file and why; the others still count.
    """
    rows, seen_paths, seen_ids = [], set(), set()
    for root in roots:
        if not Path(root).exists():
            raise ConfigError(
                f"run source {root} does not exist: give a run or sweep directory "
                f"(e.g. outputs) or {WANDB_PREFIX}<entity>/<project>"
            )
        for run in find_runs(root):
            real = os.path.realpath(run.path)
            if real in seen_paths:
                continue
            seen_paths.add(real)
            try:
                row = disk_row(run)
            except RecordError as exc:
                warnings.warn(f"run skipped: {exc}", stacklevel=2)
                continue
            if row["wandb_id"] and row["wandb_id"] in seen_ids:
                continue
            seen_ids.add(row["wandb_id"])
            rows.append(row)
    return run_frame(rows)


def load_runs(
    sources: str | Path | Sequence[str | Path], wandb_filters: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """Runs from directories and/or W&B projects (``wandb:entity/project``), one table."""
    if isinstance(sources, str | Path):
        sources = [sources]
    if not sources:
        raise ConfigError("no run source given: name a runs directory or wandb:entity/project")
    directories = [s for s in sources if not str(s).startswith(WANDB_PREFIX)]
    projects = [str(s)[len(WANDB_PREFIX) :] for s in sources if str(s).startswith(WANDB_PREFIX)]
    frames = [runs_from_disk(directories)] if directories else []
    frames += [runs_from_wandb(project, wandb_filters) for project in projects]
    runs = pd.concat(frames, ignore_index=True)
    runs = run_frame(runs.to_dict("records"))  # one column order
    # A run given both as a folder and as its W&B mirror is one run: keep the record on disk.
    mirrored = runs["wandb_id"].notna() & runs["wandb_id"].duplicated()
    return runs[~mirrored].reset_index(drop=True)


def _parse_value(text: str) -> Any:
    parsed = yaml.safe_load(text)
    return text if isinstance(parsed, dict | list) else parsed


def parse_filters(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` strings (from the command line) into a filter mapping."""
    filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--filter {item!r}: write it as column=value, e.g. beta=1.0")
        filters[key.strip()] = _parse_value(value.strip())
    return filters


def filter_runs(runs: pd.DataFrame, filters: Mapping[str, Any]) -> pd.DataFrame:
    """Keep runs whose column equals the value; runs without that setting (a teacher has no
    heads, a student alone no teacher) are kept, so one filter can pick the MHGD cell of a
    table without emptying its other columns."""
    keep = pd.Series(True, index=runs.index)
    for column, value in filters.items():
        if column not in runs.columns:
            raise ConfigError(f"cannot filter on {column!r}: the columns are {list(runs.columns)}")
        values = runs[column]
        if value is None:
            keep &= values.isna()
            continue
        matches = values.astype(str) == str(value)
        if pd.api.types.is_numeric_dtype(values) and isinstance(value, int | float):
            matches = values.astype("float64") == float(value)
        keep &= values.isna() | matches.fillna(False).astype(bool)
    return runs[keep]


def epoch_metrics(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-epoch rows of one run (a row of the runs table), from disk or from W&B."""
    if run.get("run_dir"):
        try:
            return read_metrics(RunDir(run["run_dir"]))
        except RecordError as exc:
            warnings.warn(f"curves skipped: {exc}", stacklevel=2)
            return []
    if run.get("wandb_path"):
        return wandb_history(run["wandb_path"])
    raise ConfigError(f"run {run.get('wandb_id')} has neither a run directory nor a W&B path")


def resolve_cell(runs: pd.DataFrame, prefix: str) -> str:
    """The main-run cell id that ``prefix`` starts (ids are long; a unique prefix will do)."""
    cells = sorted({c for c in runs.loc[runs["role"] == "main", "cell_id"] if c.startswith(prefix)})
    if len(cells) == 1:
        return cells[0]
    if not cells:
        raise ConfigError(f"no main runs of a cell {prefix!r}: the tables' cell column lists them")
    raise ConfigError(f"cell {prefix!r} is ambiguous: it starts {cells}; give more characters")


class RunHistory(NamedTuple):
    """The epoch rows of one run and how it ended (only finished runs make a cell's mean)."""

    status: str
    rows: list[dict[str, Any]]


def cell_histories(runs: pd.DataFrame, cell: str) -> dict[str, RunHistory]:
    """The epoch rows of every main run of a cell, labelled by seed (and status if unfinished)."""
    members = runs[(runs["role"] == "main") & (runs["cell_id"] == cell)]
    histories = {}
    for number, run in enumerate(members.sort_values("seed").to_dict("records")):
        name = f"seed {run['seed']}" + (
            "" if run["status"] == "finished" else f" ({run['status']})"
        )
        if name in histories:
            name = f"{name} #{number}"
        histories[name] = RunHistory(run["status"], epoch_metrics(run))
    return histories
