"""How configs compose: where they live, the run-folder resolver, compose for code and tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mhgd.secrets import mask_text

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
MAX_DIRNAME = 120


def dirname(overrides: str) -> str:
    """Run folder name from the command-line overrides ('default' when there are none).

    The same overrides always give the same name, so re-running a command resumes its run.
    Secrets (a password in a URL, a value under a secret key, a secret environment value) are
    masked before the name is made. A long list is cut and suffixed with a hash of all of it:
    file names stop at 255 bytes.
    """
    name = mask_text(overrides).replace("/", "_") or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: MAX_DIRNAME - 13]}-{digest}"


OmegaConf.register_new_resolver("mhgd_dirname", dirname, replace=True)


def compose(overrides: Sequence[str], *, with_hydra: bool = False) -> DictConfig:
    """The config ``mhgd-train <overrides>`` would run (with its hydra node if asked)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides), return_hydra_config=with_hydra)


def hydra_run_dir(overrides: Sequence[str]) -> Path:
    """The folder ``mhgd-train <overrides>`` (or ``mhgd-train -m``) would write to."""
    return Path(compose(overrides, with_hydra=True).hydra.run.dir)
