"""The sweep file: what it may contain, its defaults, and every check that needs no config.

A sweep file (``params:``) drives an Optuna study on the tune split, then confirms its best
settings on the final split. A plain grid (Table 4's ablation) is not a sweep file: it is an
experiment's Hydra sweeper params, run with ``mhgd-train -m``. Errors name the file and line of
the offending entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mhgd.cluster.profiles import launcher_profile
from mhgd.errors import ConfigError
from mhgd.sweeps.algorithms import Algorithm, check_algorithm
from mhgd.sweeps.jobs import CLUSTERS, EXECUTOR_KEYS, ExecutorSpec
from mhgd.sweeps.located import Located, load_located
from mhgd.sweeps.space import Param, param_from_mapping

# The objective: the student's validation top-1 after its last epoch, or at its best epoch.
METRICS = {"top1_last": "last_score", "top1_best": "best_score"}
DIRECTIONS = ("maximize", "minimize")
SEARCH_KEYS = {
    "study",
    "base",
    "executor",
    "launcher",
    "in_flight",
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
CONFIRM_KEYS = {"top_k", "seeds"}
# The search tunes on the train/validation split; confirmation chooses its own.
RESERVED_PATHS = {"dataset.split", "seed"}
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class ConfirmSpec:
    top_k: int
    seeds: tuple[int, ...]


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
    """Where jobs run: a launcher profile (``launcher: slurm_gpu``, what ``mhgd-train -m``
    uses), with any ``executor:`` keys over it; or an ``executor:`` section of its own."""
    section = _mapping(doc, "executor")
    profile = doc.data.get("launcher")
    if profile is not None:
        if "cluster" in section:
            raise doc.error("a launcher profile runs on SLURM: drop cluster", "executor", "cluster")
        try:
            section = {"cluster": "slurm", **launcher_profile(str(profile)), **section}
        except ConfigError as exc:
            raise doc.error(str(exc), "launcher") from None
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
    written = "executor" if "executor" in doc.data else "launcher"
    line = doc.line(written)
    return ExecutorSpec(cluster, options, doc.file, line)


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


def _check_keys(doc: Located) -> None:
    for key in doc.data:
        if key in ("grid", "seeds"):
            raise doc.error(
                "a grid is not a sweep file: put it in an experiment as Hydra sweeper params "
                "(hydra.sweeper.params, see mhgd/conf/experiment/table4/vgg_heads.yaml) and run "
                "mhgd-train -m experiment=<it>",
                key,
            )
        if key not in SEARCH_KEYS:
            raise doc.error(
                f"unknown key {key!r}; known keys: {', '.join(sorted(SEARCH_KEYS))}", key
            )


def _confirm(doc: Located) -> ConfirmSpec:
    section = _mapping(doc, "confirm")
    for key in section:
        if key not in CONFIRM_KEYS:
            raise doc.error(f"unknown confirm key {key!r}; known: top_k, seeds", "confirm", key)
    seeds = _seeds(doc, section.get("seeds", [0, 1, 2, 3, 4]), "confirm", "seeds")
    return ConfirmSpec(_int(doc, section, "top_k", 3, 1, "confirm"), seeds)


def load_spec(file: str | Path) -> SearchSpec:
    """Read and check a sweep file (everything that does not need the Hydra config)."""
    doc = load_located(file)
    if not isinstance(doc.data, dict):
        raise doc.error("a sweep file is a mapping with at least study:, params: and trials:")
    study = doc.data.get("study")
    if not isinstance(study, str) or not _STUDY_NAME.fullmatch(study):
        raise doc.error(
            f"study must be a name of letters, digits, '.', '_' or '-' (got {study!r}); it "
            "names the Optuna study and the output folder",
            "study",
        )
    _check_keys(doc)
    common: dict[str, Any] = {
        "source": doc,
        "study": study,
        "base": _base(doc, RESERVED_PATHS),
        "executor": _executor(doc),
        "in_flight": _int(doc, doc.data, "in_flight", 1, 1),
    }
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
