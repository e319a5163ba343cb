"""Job configs: what ``mhgd-train`` would compose for a job, and the checks run before any
job is submitted (every searched value composes and passes the pipeline's validation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from mhgd.config import compose, hydra_run_dir
from mhgd.errors import ConfigError
from mhgd.pipeline import validate
from mhgd.stages import teacher_key
from mhgd.sweeps.located import SweepFileError
from mhgd.sweeps.space import Scalar, override_value
from mhgd.sweeps.spec import SweepSpec

log = logging.getLogger(__name__)

__all__ = [
    "FINAL_SPLIT",
    "TUNE_SPLIT",
    "Checked",
    "Layout",
    "check_configs",
    "compose",
    "hydra_run_dir",
    "layout",
]

TUNE_SPLIT = "dataset.split=tune"
FINAL_SPLIT = "dataset.split=final"


@dataclass(frozen=True)
class Layout:
    """Where a sweep keeps its files. Paths are absolute and passed to every job, so all jobs
    share one artifact store (teachers, MHANs) whatever their working directory."""

    study_dir: Path
    path_overrides: tuple[str, ...]

    @property
    def jobs_dir(self) -> Path:
        return self.study_dir / "jobs"

    @property
    def default_storage(self) -> str:
        return f"sqlite:///{self.study_dir / 'optuna.db'}"

    @property
    def lock_file(self) -> Path:
        return self.study_dir / ".controller.lock"

    def trial_dir(self, number: int) -> Path:
        return self.study_dir / "trials" / f"trial-{number:04d}"

    def confirm_dir(self, number: int, seed: int) -> Path:
        return self.study_dir / "confirm" / f"trial-{number:04d}" / f"seed-{seed}"


def layout(spec: SweepSpec, base: DictConfig) -> Layout:
    paths = {key: Path(str(value)).expanduser().resolve() for key, value in base.paths.items()}
    overrides = tuple(f"paths.{key}={override_value(str(path))}" for key, path in paths.items())
    return Layout(paths["outputs"] / spec.study, overrides)


def _validated(spec: SweepSpec, overrides: Sequence[str], line: int, what: str) -> DictConfig:
    try:
        cfg = compose(overrides)
        validate(cfg)
    except (HydraException, OmegaConfBaseException, ConfigError) as exc:
        message = " ".join(str(exc).split())
        raise SweepFileError(spec.source.file, line, f"{what}: {message}") from exc
    except (TypeError, ValueError) as exc:
        message = f"{type(exc).__name__}: {exc}"
        raise SweepFileError(spec.source.file, line, f"{what}: {message}") from exc
    return cfg


def _changes_teacher(base: DictConfig, probe: DictConfig) -> bool:
    key = teacher_key(probe)
    return key is not None and key != teacher_key(base)


Axis = tuple[str, int, Sequence[Scalar]]


@dataclass(frozen=True)
class Checked:
    """The composed base config, and whether some searched value changes its teacher."""

    base: DictConfig
    teacher_varies: bool


def check_configs(spec: SweepSpec, base_overrides: Sequence[str], axes: Sequence[Axis]) -> Checked:
    """Compose and validate the base and every (path, line, values) axis at its probe values.
    Warn when a value would train its own teacher."""
    base = _validated(spec, base_overrides, spec.source.line("base"), "base")
    teacher_varies = False
    for path, line, values in axes:
        warned = False
        for value in values:
            override = f"{path}={override_value(value)}"
            probe = _validated(spec, [*base_overrides, override], line, override)
            if not warned and _changes_teacher(base, probe):
                warned = teacher_varies = True
                log.warning(
                    "%s:%d: %s changes the teacher, so every value trains and caches its own "
                    "teacher (sweep method.* or student.* keys to reuse one)",
                    spec.source.file,
                    line,
                    path,
                )
    return Checked(base, teacher_varies)
