"""Launcher profiles (``slurm/hydra/launcher/<name>.yaml``) for code other than the launcher.

A sweep file names a profile (``launcher: slurm_gpu``) instead of repeating its SLURM block, so
``mhgd-train -m`` and ``mhgd-sweep`` submit with the same site settings.
"""

from __future__ import annotations

from typing import Any

from mhgd.cluster.executors import LAUNCHER_ONLY
from mhgd.errors import ConfigError

# Set per submission, not by the profile: the job name, and how many jobs run at once (a
# sweep's in_flight).
PER_SUBMISSION = frozenset({"name", "array_parallelism"})


def launcher_profile(name: str) -> dict[str, Any]:
    """The resolved keys of launcher profile ``name``, as executors take them."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from mhgd.config import compose

    try:
        cfg = compose([f"hydra/launcher={name}"], with_hydra=True)
    except HydraException as exc:
        raise ConfigError(
            f"launcher profile {name!r} not found ({' '.join(str(exc).split())[:200]}): "
            "see slurm/hydra/launcher/ or $MHGD_PROFILES"
        ) from None
    keys = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert isinstance(keys, dict)
    return {
        str(k): v
        for k, v in keys.items()
        if v is not None and k not in LAUNCHER_ONLY | PER_SUBMISSION
    }
