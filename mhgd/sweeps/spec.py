"""The sweep file: what it may contain, its defaults, and every check that needs no config.

A *search* file (``params:``) drives an Optuna study on the tune split; a *grid* file
(``grid:``) is a plain job array over every combination, for ablations such as Table 4.
Errors name the file and line of the offending entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhgd.sweeps.algorithms import Algorithm, check_algorithm
from mhgd.sweeps.jobs import CLUSTERS, EXECUTOR_KEYS, ExecutorSpec
from mhgd.sweeps.located import Located, load_located
from mhgd.sweeps.space import Param, Scalar, param_from_mapping

# The objective: the student's validation top-1 after its last epoch, or at its best epoch.
METRICS = {"top1_last": "last_score", "top1_best": "best_score"}
DIRECTIONS = ("maximize", "minimize")
COMMON_KEYS = {"study", "base", "executor", "in_flight"}
SEARCH_KEYS = COMMON_KEYS | {
    "params",
    "trials",
    "metric",
    "direction",
    "sampler",
    "pruner",
    "storage",
    "retries",
    "confirm",
}
GRID_KEYS = COMMON_KEYS | {"grid", "seeds"}
CONFIRM_KEYS = {"top_k", "seeds"}
# The search tunes on the train/validation split; confirmation and grids choose their own.
RESERVED_PATHS = {"dataset.split", "seed"}
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ConfirmSpec:
    top_k: int
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class GridAxis:
    path: str
    values: tuple[Scalar, ...]
    line: int


@dataclass(frozen=True)
class SweepSpec:
    """What every sweep file has: the study name, the base experiment and where jobs run."""

    source: Located
    study: str
    base: tuple[str, ...]
    executor: ExecutorSpec
    in_flight: int


@dataclass(frozen=True)
class SearchSpec(SweepSpec):
    params: tuple[Param, ...]
    trials: int
    metric: str
    direction: str
    sampler: Algorithm
    pruner: Algorithm
    storage: str | None
    retries: int
    confirm: ConfirmSpec


@dataclass(frozen=True)
class GridSpec(SweepSpec):
    grid: tuple[GridAxis, ...]
    seeds: tuple[int, ...]


def _int(
    doc: Located, section: dict[str, Any], key: str, default: int, minimum: int, *path: str
) -> int:
    """``section[key]`` (``section`` sits at ``path`` in the file), checked to be >= minimum."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise doc.error(f"{key} must be an integer >= {minimum} (got {value!r})", *path, key)
    return value


def _mapping(doc: Located, key: str) -> dict[str, Any]:
    value = doc.data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise doc.error(f"{key} must be a mapping (key: value lines)", key)
    return value


def _seeds(doc: Located, value: Any, *path: str) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) for s in value)
    ):
        raise doc.error(f"seeds must be a non-empty list of integers (got {value!r})", *path)
    if len(set(value)) != len(value):
        raise doc.error(f"seeds {value} repeat a seed", *path)
    return tuple(value)


def _algorithm(doc: Located, kind: str, default: str) -> Algorithm:
    value = doc.data.get(kind, default)
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise doc.error(f"{kind} must be a name or a mapping with name: and options", kind)
    spec = Algorithm(value["name"], {k: v for k, v in value.items() if k != "name"})
    try:
        check_algorithm(kind, spec)
    except ValueError as exc:
        raise doc.error(str(exc), kind) from exc
    return spec


def _executor(doc: Located) -> ExecutorSpec:
    section = _mapping(doc, "executor")
    cluster = section.get("cluster", "local")
    if cluster not in CLUSTERS:
        raise doc.error(
            f"executor cluster {cluster!r} is unknown: choose one of {', '.join(CLUSTERS)}",
            "executor",
            "cluster",
        )
    options = {k: v for k, v in section.items() if k != "cluster"}
    for key in options:
        if key == "array_parallelism":
            raise doc.error("use in_flight: for how many jobs run at once", "executor", key)
        if key not in EXECUTOR_KEYS:
            raise doc.error(
                f"unknown executor parameter {key!r}; known: {', '.join(sorted(EXECUTOR_KEYS))}",
                "executor",
                key,
            )
    return ExecutorSpec(cluster, options, doc.file, doc.line("executor"))


def _base(doc: Located, reserved: set[str]) -> tuple[str, ...]:
    base = doc.data.get("base", [])
    if isinstance(base, str):
        base = [base]
    if not isinstance(base, list) or not all(isinstance(o, str) and "=" in o for o in base):
        raise doc.error(
            "base must be a list of mhgd-train overrides like experiment=quickstart", "base"
        )
    for index, override in enumerate(base):
        key = override.split("=", 1)[0].lstrip("+~")
        if key in reserved:
            raise doc.error(
                f"base sets {key}: mhgd-sweep chooses it (the search runs on the tune split, "
                "confirmation on the final split; seeds come from seeds: lists); remove it",
                "base",
                index,
            )
    return tuple(base)


def _params(doc: Located) -> tuple[Param, ...]:
    section = _mapping(doc, "params")
    if not section:
        raise doc.error("params must name at least one config path to search", "params")
    params = []
    for path, fields in section.items():
        line = doc.line("params", path)
        if path in RESERVED_PATHS:
            raise doc.error(f"{path} cannot be searched: mhgd-sweep sets it", "params", path)
        if not isinstance(fields, dict):
            raise doc.error(
                f"{path}: give a mapping such as {{type: int, low: 1, high: 8}}", "params", path
            )
        try:
            params.append(param_from_mapping(path, line, fields))
        except ValueError as exc:
            raise doc.error(str(exc), "params", path) from exc
    return tuple(params)


def _nested(value: Any) -> bool:
    return isinstance(value, dict | list)


def _grid(doc: Located) -> tuple[GridAxis, ...]:
    axes = []
    for path, values in _mapping(doc, "grid").items():
        if path == "seed":
            raise doc.error("seed cannot be a grid axis: list them under seeds:", "grid", path)
        if not isinstance(values, list) or not values or any(_nested(v) for v in values):
            raise doc.error(f"{path}: give a non-empty list of single values", "grid", path)
        axes.append(GridAxis(path, tuple(values), doc.line("grid", path)))
    return tuple(axes)


def _check_keys(doc: Located, allowed: set[str], mode: str) -> None:
    for key in doc.data:
        if key not in allowed:
            hint = f"known keys: {', '.join(sorted(allowed))}"
            if key in SEARCH_KEYS | GRID_KEYS:
                hint = f"{key} has no meaning in a {mode} sweep file"
            raise doc.error(f"unknown key {key!r}; {hint}", key)


def _confirm(doc: Located) -> ConfirmSpec:
    section = _mapping(doc, "confirm")
    for key in section:
        if key not in CONFIRM_KEYS:
            raise doc.error(f"unknown confirm key {key!r}; known: top_k, seeds", "confirm", key)
    seeds = _seeds(doc, section.get("seeds", [0, 1, 2, 3, 4]), "confirm", "seeds")
    return ConfirmSpec(_int(doc, section, "top_k", 3, 1, "confirm"), seeds)


def load_spec(file: str | Path) -> SearchSpec | GridSpec:
    """Read and check a sweep file (everything that does not need the Hydra config)."""
    doc = load_located(file)
    if not isinstance(doc.data, dict):
        raise doc.error("a sweep file is a mapping with at least study: and params: (or grid:)")
    study = doc.data.get("study")
    if not isinstance(study, str) or not _STUDY_NAME.fullmatch(study):
        raise doc.error(
            f"study must be a name of letters, digits, '.', '_' or '-' (got {study!r}); it "
            "names the Optuna study and the output folder",
            "study",
        )
    is_grid = "grid" in doc.data
    if is_grid and "params" in doc.data:
        raise doc.error(
            "a sweep file has params: (a search) or grid: (a job array), not both", "grid"
        )
    _check_keys(doc, GRID_KEYS if is_grid else SEARCH_KEYS, "grid" if is_grid else "search")
    common: dict[str, Any] = {
        "source": doc,
        "study": study,
        "base": _base(doc, {"seed"} if is_grid else RESERVED_PATHS),
        "executor": _executor(doc),
        "in_flight": _int(doc, doc.data, "in_flight", 1, 1),
    }
    if is_grid:
        grid = _grid(doc)
        if not grid:
            raise doc.error("grid must name at least one config path and its values", "grid")
        seeds = _seeds(doc, doc.data.get("seeds", [0]), "seeds")
        return GridSpec(**common, grid=grid, seeds=seeds)
    metric = doc.data.get("metric", "top1_last")
    if metric not in METRICS:
        raise doc.error(
            f"metric {metric!r} is unknown: choose one of {', '.join(METRICS)}", "metric"
        )
    direction = doc.data.get("direction", "maximize")
    if direction not in DIRECTIONS:
        raise doc.error(f"direction must be maximize or minimize (got {direction!r})", "direction")
    storage = doc.data.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        raise doc.error("storage must be a database URL or a journal file path", "storage")
    if "trials" not in doc.data:
        raise doc.error("give trials: the number of completed + pruned trials the study needs")
    return SearchSpec(
        **common,
        params=_params(doc),
        trials=_int(doc, doc.data, "trials", 0, 1),
        metric=metric,
        direction=direction,
        sampler=_algorithm(doc, "sampler", "tpe"),
        pruner=_algorithm(doc, "pruner", "median"),
        storage=storage,
        retries=_int(doc, doc.data, "retries", 1, 0),
        confirm=_confirm(doc),
    )
