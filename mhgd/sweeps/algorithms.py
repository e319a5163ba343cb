"""Samplers, pruners and storages by the names a sweep file uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from mhgd.errors import ConfigError
from mhgd.registry import Registry
from mhgd.secrets import redact

# Optuna's classes, by the names sweep files use; another sampler or pruner is one more add().
SAMPLERS: Registry[type[optuna.samplers.BaseSampler]] = Registry(
    "sampler", None, 'SAMPLERS.add("<name>", <optuna sampler class>) in mhgd/sweeps/algorithms.py'
)
PRUNERS: Registry[type[optuna.pruners.BasePruner]] = Registry(
    "pruner", None, 'PRUNERS.add("<name>", <optuna pruner class>) in mhgd/sweeps/algorithms.py'
)
for _name, _sampler in (
    ("tpe", optuna.samplers.TPESampler),
    ("random", optuna.samplers.RandomSampler),
    ("qmc", optuna.samplers.QMCSampler),
    ("gp", optuna.samplers.GPSampler),
):
    SAMPLERS.add(_name, _sampler)
for _name, _pruner in (
    ("median", optuna.pruners.MedianPruner),
    ("percentile", optuna.pruners.PercentilePruner),
    ("hyperband", optuna.pruners.HyperbandPruner),
    ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ("threshold", optuna.pruners.ThresholdPruner),
    ("none", optuna.pruners.NopPruner),
):
    PRUNERS.add(_name, _pruner)
# SQLite serialises writers; trials report every epoch, so give a busy database time.
SQLITE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Algorithm:
    """A sampler or pruner as the sweep file names it: registry name plus keyword options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def build_sampler(spec: Algorithm, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler, its seed moved by ``seed_offset`` so a resumed study does not replay the
    random draws it already made."""
    options = dict(spec.options)
    if options.get("seed") is not None:
        options["seed"] = int(options["seed"]) + seed_offset
    return SAMPLERS[spec.name](**options)


def build_pruner(spec: Algorithm) -> optuna.pruners.BasePruner:
    return PRUNERS[spec.name](**spec.options)


def check_algorithm(kind: str, spec: Algorithm) -> None:
    """Raise ValueError when the name or an option is wrong (constructing it is the check)."""
    registry: Registry[Any] = SAMPLERS if kind == "sampler" else PRUNERS
    if spec.name not in registry:
        raise ValueError(f"unknown {kind} {spec.name!r}: choose one of {', '.join(registry)}")
    try:
        build_sampler(spec) if kind == "sampler" else build_pruner(spec)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind} {spec.name!r}: {exc}") from exc


def is_database_url(storage: str) -> bool:
    return "://" in storage


def describe_storage(storage: str) -> str:
    """The storage as it may be shown: passwords inside database URLs masked."""
    return redact(storage)


def open_storage(storage: str) -> BaseStorage:
    """A database URL (SQLAlchemy) or else a journal file path, as Optuna's own CLI reads it."""
    try:
        if is_database_url(storage):
            sqlite = storage.startswith("sqlite")
            engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if sqlite else None
            return RDBStorage(storage, engine_kwargs=engine)
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(storage))
    except Exception as exc:
        # Drivers may quote the URL: mask it, and drop the chained traceback that holds it.
        detail = redact(str(exc)).splitlines()[0] if str(exc) else ""
        raise ConfigError(
            f"cannot open the Optuna storage {describe_storage(storage)}: "
            f"{type(exc).__name__}: {detail}. Check the URL, the database server and its Python "
            "driver, or use a SQLite URL or a journal file path"
        ) from None
