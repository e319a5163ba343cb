"""mhgd-train: train what a Hydra config asks for (a teacher, or a student and what it needs).

mhgd-train experiment=quickstart
mhgd-train -m experiment=table4/vgg_heads seed=0,1,2,3,4 method.heads=1,2,4,8,16
"""

from __future__ import annotations

import hashlib
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mhgd.errors import ConfigError

MAX_DIRNAME = 120


def _dirname(overrides: str) -> str:
    """Run folder name from the command-line overrides ('default' when there are none).

    The same overrides always give the same name, so re-running a command resumes its run. A
    long list is cut and suffixed with a hash of all of it: file names stop at 255 bytes.
    """
    name = overrides.replace("/", "_") or "default"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{name[: MAX_DIRNAME - 13]}-{digest}"


OmegaConf.register_new_resolver("mhgd_dirname", _dirname, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from mhgd.cluster import slurm_job_record
    from mhgd.pipeline import run

    run_dir = HydraConfig.get().runtime.output_dir
    try:
        result = run(cfg, run_dir, extra_record=slurm_job_record())
    except ConfigError as exc:
        print(f"mhgd-train: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    from mhgd.summary import final_message

    print(final_message(cfg.stage, result, run_dir))
    return result.last_score


if __name__ == "__main__":
    main()
