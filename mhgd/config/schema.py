"""Typed schemas of the training config, and the check that holds a composed config to them.

Each config group has a dataclass here (a method's lives next to its code, as its ``Config``
class attribute, so a new method is one module plus one yaml file). The yaml files keep the
defaults and their comments; the schemas say what each key may hold. ``check`` merges the
composed config into the schemas (OmegaConf's typed nodes refuse ``heads=four`` or
``heads=2.5``), then tests the ranges and choices the fields declare with ``bounded`` and
``choice``. Every failure is one ConfigError line naming the key, e.g.
``method.beta=-1.0: must be >= 0``.

To add a key: add a field to the dataclass of its group (``RuntimeConfig``, ``DatasetConfig``,
``ModelConfig``, ... below, or the method's ``Config``) with its default, type and bounds, and
the same key with its comment to the group's yaml file.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

if typing.TYPE_CHECKING:  # OmegaConf loads only when a config is checked: the methods import
    from omegaconf import DictConfig  # their schemas on machines that may have torch alone
    from omegaconf.errors import OmegaConfBaseException

from mhgd.errors import ConfigError


# -- declaring fields -------------------------------------------------------------------------
def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric field with bounds (None stays allowed when the type is Optional)."""
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    return field(default=default, metadata={"bounds": bounds})


def choice(default: Any, *choices: str, pattern: str | None = None) -> Any:
    """A string field that must be one of ``choices`` (or match ``pattern``)."""
    return field(default=default, metadata={"choices": choices, "pattern": pattern})


# -- the groups -------------------------------------------------------------------------------
@dataclass
class MethodConfig:
    """What every method section has; a method's ``Config`` subclasses it."""

    name: str = "none"


@dataclass
class ModelConfig:
    name: str = "vgg7"
    width: float = bounded(1.0, gt=0)
    batch_norm: bool | None = None
    init: str | None = choice(None, "fan_in", "fan_out")


@dataclass
class SubsetConfig:
    """``dataset.subset``: a stratified part of the training set for some stages (per seed)."""

    per_class: int | None = bounded(None, ge=1)
    fraction: float | None = bounded(None, gt=0, le=1)
    stages: list[str] = field(default_factory=lambda: ["student"])


@dataclass
class DatasetConfig:
    name: str = "cifar100"
    split: str = choice("final", "final", "tune")
    val_size: int | None = bounded(None, ge=1)
    download: bool = False
    subset: SubsetConfig = field(default_factory=SubsetConfig)


@dataclass
class ScheduleConfig:
    epochs: int = bounded(200, ge=1)
    lr: float = bounded(0.01, gt=0)
    milestones: list[int] = field(default_factory=list, metadata={"item_ge": 1})
    gamma: float = bounded(0.1, gt=0)
    student_scale: float = bounded(0.5, gt=0)


@dataclass
class OptimConfig:
    batch_size: int = bounded(128, ge=1)
    momentum: float = bounded(0.9, ge=0, lt=1)
    weight_decay: float = bounded(5.0e-4, ge=0)


@dataclass
class RuntimeConfig:
    device: str = choice("auto", pattern=r"auto|cpu|mps|cuda(:\d+)?")
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    threads: int | None = bounded(None, ge=1)
    progress: bool | None = None


@dataclass
class PathsConfig:
    data: str = "data"
    store: str = "store"
    outputs: str = "outputs"


@dataclass
class LoggerConfig:
    mode: str = choice("auto", "auto", "online", "offline", "disabled")
    project: str = "mhgd"
    entity: str | None = None
    system_metrics: bool = True
    console: bool = True
    init_timeout_s: float = bounded(15.0, gt=0)


@dataclass
class TrainConfig:
    """The root: what ``mhgd-train`` composes (the method section is checked on its own)."""

    name: str = choice("default", pattern=r"[^/\s]+")
    stage: str = choice("student", "teacher", "student")
    seed: int = bounded(0, ge=0)
    teacher_seed: int = bounded(0, ge=0)
    teacher_checkpoint: str | None = None
    probe_mhan: str | None = None
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    teacher: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# -- checking ---------------------------------------------------------------------------------
def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _kind(tp: Any) -> str:
    text = tp.__name__ if isinstance(tp, type) else str(tp)
    return (
        text.replace("int", "an integer", 1)
        .replace("float", "a number", 1)
        .replace("bool", "true or false", 1)
        .replace("str", "a string", 1)
        .replace("list[an integer]", "a list of integers")
        .replace(" | None", " or null")
    )


def _field_type(schema: type, path: Sequence[str]) -> Any:
    """The declared type of ``path`` inside ``schema`` (None when it is not declared)."""
    tp: Any = schema
    for part in path:
        hints = typing.get_type_hints(tp) if dataclasses.is_dataclass(tp) else {}
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _translate(exc: OmegaConfBaseException, prefix: str, schema: type) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, ValidationError

    key = str(exc.full_key or exc.key or "")
    full = f"{prefix}{key}"
    if isinstance(exc, ConfigKeyError):
        parent = ".".join(key.split(".")[:-1])
        owner = _field_type(schema, parent.split(".")) if parent else schema
        known = (
            ", ".join(f.name for f in dataclasses.fields(owner))
            if dataclasses.is_dataclass(owner)
            else "none"
        )
        where = f"{prefix}{parent}".rstrip(".") or "the config"
        return ConfigError(f"{full}: unknown key; {where} has: {known}")
    if isinstance(exc, ValidationError):
        expected = _field_type(schema, key.split("."))
        return ConfigError(f"{full}={_show(exc.value)}: must be {_kind(expected)}")
    return ConfigError(f"{full}: {str(exc).splitlines()[0]}")


_BOUNDS = {
    "ge": (operator.ge, ">="),
    "gt": (operator.gt, ">"),
    "le": (operator.le, "<="),
    "lt": (operator.lt, "<"),
}


def _check_fields(node: Any, prefix: str) -> None:
    """Bounds, choices, patterns and finiteness of every field of a merged structured node."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{key}.")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value}: must be a finite number")
        for item in value if isinstance(value, list) else ():
            if isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{key}={value}: every entry must be a finite number")
            if "item_ge" in f.metadata and item < f.metadata["item_ge"]:
                raise ConfigError(f"{key}={value}: every entry must be >= {f.metadata['item_ge']}")
        if value is None:
            continue
        for op, limit in f.metadata.get("bounds", {}).items():
            test, text = _BOUNDS[op]
            if not test(value, limit):
                raise ConfigError(f"{key}={value}: must be {text} {limit:g}")
        choices, pattern = f.metadata.get("choices"), f.metadata.get("pattern")
        if choices and value not in choices:
            raise ConfigError(f"{key}={value}: choose one of {', '.join(choices)}")
        if pattern and not re.fullmatch(pattern, str(value)):
            raise ConfigError(f"{key}={value}: must match {pattern}")


def _check_nesting(schema: type, values: Mapping[str, Any], prefix: str) -> None:
    """A section where a group of keys belongs (``optim=nope``) is refused by name."""
    hints = typing.get_type_hints(schema)
    for key, value in values.items():
        tp = hints.get(key)
        if not dataclasses.is_dataclass(tp):
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"{prefix}{key}={_show(value)}: must be a section of keys")
        _check_nesting(tp, value, f"{prefix}{key}.")


def check_section(schema: type, values: Mapping[str, Any], prefix: str) -> Any:
    """``values`` (a plain mapping) held to ``schema``; returns the typed, merged object."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _check_nesting(schema, values, prefix)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), values)
        typed = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _translate(exc, prefix, schema) from None
    _check_fields(typed, prefix)
    return typed


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, without Hydra's node."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    try:
        tree = OmegaConf.to_container(job, resolve=True)
    except OmegaConfBaseException as exc:
        key = exc.full_key or exc.key or "?"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None
    assert isinstance(tree, dict)
    return tree


def check(cfg: DictConfig, method_schema: Callable[[str], type] | None = None) -> None:
    """Hold a composed config to the schemas: one ConfigError line naming the key on failure.

    ``method_schema`` maps a method name to its ``Config`` (the pipeline looks it up in the
    method registry); without it the method section's name alone is checked.
    """
    tree = plain_config(cfg)
    method = tree.pop("method", {})
    check_section(TrainConfig, tree, "")
    if not isinstance(method, Mapping):
        raise ConfigError(f"method={method}: must be a method section (method=<name>)")
    name = check_section(MethodConfig, {"name": method.get("name", "none")}, "method.").name
    if method_schema is not None:
        check_section(method_schema(name), method, "method.")
