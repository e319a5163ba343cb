"""Search-space parameters: Optuna distributions on one side, Hydra overrides on the other."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

Scalar = str | int | float | bool | None
KINDS = ("categorical", "int", "float")
CATEGORICAL_FIELDS = {"type", "choices"}
RANGE_FIELDS = {"type", "low", "high", "step", "log"}

# Values Hydra reads back as the same string without quotes; anything else is quoted.
_BARE = re.compile(r"[A-Za-z_][\w./@:+-]*|/[\w./@:+-]*")
_NOT_A_STRING = re.compile(r"(?i)true|false|null|[-+]?(inf|nan)")


def override_value(value: Scalar) -> str:
    """``value`` written so that a Hydra override parses it back to the same Python value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if _BARE.fullmatch(text) and not _NOT_A_STRING.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides_for(params: Mapping[str, Scalar]) -> list[str]:
    """Hydra overrides setting config paths to values, in a stable order."""
    return [f"{path}={override_value(value)}" for path, value in sorted(params.items())]


@dataclass(frozen=True)
class Param:
    """One searched config path. ``line`` is where the sweep file defines it."""

    path: str
    kind: str
    line: int
    choices: tuple[Scalar, ...] = ()
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    log: bool = False

    def distribution(self) -> BaseDistribution:
        """Optuna's distribution; its own checks (e.g. log needs low > 0) raise ValueError."""
        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def probe_values(self) -> list[Scalar]:
        """Values that exercise the whole range when the config is checked before submitting."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return sorted({int(self.low), int(self.high)})
        return sorted({self.low, self.high})


def param_from_mapping(path: str, line: int, fields: Mapping[str, Any]) -> Param:
    """Build a Param from its sweep-file mapping; raises ValueError saying what to fix."""
    kind = fields.get("type")
    if kind not in KINDS:
        raise ValueError(f"{path}: give type: one of {', '.join(KINDS)} (got {kind!r})")
    allowed = CATEGORICAL_FIELDS if kind == "categorical" else RANGE_FIELDS
    if unknown := sorted(set(fields) - allowed):
        raise ValueError(f"{path}: unknown field(s) {unknown} for {kind}; use {sorted(allowed)}")
    if kind == "categorical":
        choices = fields.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{path}: choices must be a non-empty list")
        for choice in choices:
            if isinstance(choice, dict | list):
                raise ValueError(f"{path}: choice {choice!r} is not a single value")
        return Param(path, kind, line, choices=tuple(choices))
    number = int if kind == "int" else (int, float)
    what = "an integer" if kind == "int" else "a number"
    for bound in ("low", "high"):
        value = fields.get(bound)
        if isinstance(value, bool) or not isinstance(value, number):
            raise ValueError(f"{path}: {bound} must be {what}")
    low, high = fields["low"], fields["high"]
    if low > high:
        raise ValueError(f"{path}: empty range, low={low} > high={high}")
    step, log = fields.get("step"), fields.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{path}: log must be true or false")
    if step is not None and (isinstance(step, bool) or not isinstance(step, number)):
        raise ValueError(f"{path}: step must be {what}")
    if kind == "float":
        low, high = float(low), float(high)
    param = Param(path, kind, line, low=low, high=high, step=step, log=log)
    param.distribution()
    return param
