"""submitit executors from a launcher profile's keys (hydra-submitit-launcher's names)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit

CLUSTERS = ("local", "slurm")
# Keys both clusters understand (hydra-submitit-launcher's BaseQueueConf).
GENERIC_KEYS = frozenset(
    {
        "timeout_min",
        "cpus_per_task",
        "gpus_per_node",
        "tasks_per_node",
        "mem_gb",
        "nodes",
        "name",
        "stderr_to_stdout",
    }
)
# Keys of the launcher's own that are not submitit parameters.
LAUNCHER_ONLY = frozenset({"_target_", "submitit_folder", "wait", "build", "runs_per_gpu"})
# submitit's local default (2 min) would kill any real run; partitions usually allow this.
DEFAULT_TIMEOUT_MIN = 240


def make_executor(
    folder: str | Path,
    cluster: str,
    options: Mapping[str, Any],
    *,
    after: Sequence[str] = (),
) -> submitit.AutoExecutor:
    """An executor writing job files under ``folder`` (a ``%j`` pattern is allowed).

    ``after``: job ids the submitted jobs wait for (afterok); if one of them fails SLURM
    cancels the waiting jobs instead of leaving them pending forever.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster {cluster!r}: choose one of {CLUSTERS}")
    options = {k: v for k, v in options.items() if k not in LAUNCHER_ONLY}
    init: dict[str, Any] = {}
    if (max_timeouts := options.pop("max_num_timeout", None)) is not None:
        init[f"{cluster}_max_num_timeout"] = max_timeouts
    params: dict[str, Any] = {"timeout_min": DEFAULT_TIMEOUT_MIN}
    for key, value in options.items():
        if key in GENERIC_KEYS:
            params[key] = value
        elif key == "setup":
            params.update(slurm_setup=value, local_setup=value)
        else:
            params[f"slurm_{key}"] = value
    if after:
        params["slurm_dependency"] = "afterok:" + ":".join(after)
        extra = dict(params.get("slurm_additional_parameters") or {})
        params["slurm_additional_parameters"] = {**extra, "kill_on_invalid_dep": "yes"}
    folder = str(folder)
    executor = submitit.AutoExecutor(
        folder=folder if "%j" in folder else Path(folder) / "%j", cluster=cluster, **init
    )
    executor.update_parameters(**params)
    return executor
