"""The config spine: where the configs live, how they compose, the run-folder resolver, and
the typed schemas every composed config is held to.

``mhgd-train``, the sweeps, the cluster layer, the tests and the benchmarks all compose through
here, so they see the same config and the same checks. Importing the package is cheap: no torch
(the CLI's ``--help`` and tab completion import it), and neither Hydra nor OmegaConf (the
networks and methods import their schemas on machines that may have torch alone); each name
loads its module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from mhgd.errors import ConfigError

_HOMES = {
    "CONF_DIR": "spine",
    "MAX_DIRNAME": "spine",
    "compose": "spine",
    "dirname": "spine",
    "hydra_run_dir": "spine",
    "check": "schema",
    "check_section": "schema",
    "plain_config": "schema",
}
__all__ = ["ConfigError", *_HOMES]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'mhgd.config' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mhgd.config.{_HOMES[name]}"), name)
