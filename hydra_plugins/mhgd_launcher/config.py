"""The ``hydra/launcher=mhgd_slurm`` config, which the profiles in slurm/ extend."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class MhgdSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.mhgd_launcher.launcher.MhgdSlurmLauncher"
    # squeue shows the experiment's name rather than the script's.
    name: str = "${name}"
    # Training resumes from its checkpoint, so a job that reaches its time limit can requeue.
    max_num_timeout: int = 3
    # false: submit, say how to collect, and exit; the jobs run on (rerun the command to wait).
    wait: bool = True
    # SLURM parameters of the jobs that build teachers and MHANs, over the runs' ones (e.g.
    # {timeout_min: 1440} for a teacher that trains longer than a student).
    build: dict[str, Any] = field(default_factory=dict)
    # Runs trained side by side in one job on its GPU (each its own process, record, W&B run).
    runs_per_gpu: int = 1


ConfigStore.instance().store(
    group="hydra/launcher", name="mhgd_slurm", node=MhgdSlurmQueueConf, provider="mhgd"
)
