"""Finds the SLURM launcher profiles without ``-cd``: ``hydra/launcher=slurm_gpu`` just works.

Profiles live in ``$MHGD_PROFILES`` if set (a folder holding ``hydra/launcher/*.yaml``), else
in the checkout's ``slurm/`` folder. A ``-cd`` folder given on the command line still comes
first, so a site's own copy of a profile wins.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

CHECKOUT_PROFILES = Path(__file__).resolve().parents[2] / "slurm"


def profiles_dir() -> Path:
    return Path(os.environ.get("MHGD_PROFILES") or CHECKOUT_PROFILES)


class MhgdProfilesSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any("mhgd" in str(element.path) for element in search_path.get_path()):
            return  # another Hydra app in the same environment
        search_path.append(provider="mhgd-profiles", path=f"file://{profiles_dir()}")
