"""hydra-submitit-launcher's SLURM launcher on mhgd's cluster layer (mhgd.cluster).

A rerun of the same ``-m`` command submits nothing that is finished or still queued/running:
it waits for the live jobs of the earlier command and submits only what has no job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)


class LaunchError(CompactHydraException):
    """Why a sweep was not submitted or did not finish; Hydra prints it without a traceback."""


class MhgdSlurmLauncher(SlurmLauncher):
    """Submits a multirun as SLURM arrays, after the builds of the artifacts it lacks.

    Each run waits (``afterok``) only for the builds it needs: one array per distinct set of
    builds, so a failed build cancels only its own runs. In a task, a failed run raises (SLURM
    records FAILED); training stopped by SIGTERM ends without a result, so a requeued task is
    waited for rather than reported failed.
    """

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        from mhgd.cluster.jobs import leave_to_slurm
        from mhgd.engine.preemption import Preempted

        job_return = super().__call__(
            sweep_overrides, job_dir_key, job_num, job_id, singleton_state
        )
        # The exception the task raised (JobReturn.return_value would re-raise it).
        error = job_return._return_value if job_return.status is JobStatus.FAILED else None
        if isinstance(error, Preempted):
            leave_to_slurm(error)
        if error is not None:
            # Into the run's train.log and the job's log, then out: SLURM records FAILED.
            log.error("the run failed", exc_info=error)
            raise error
        return job_return

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from mhgd.cluster.planning import check_before_submit, plan
        from mhgd.cluster.submission import Submission, failures
        from mhgd.errors import ConfigError

        assert self.config is not None
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        jobs = [
            self._task_config(overrides, number)
            for overrides, number in zip(job_overrides, numbers, strict=True)
        ]
        try:
            check_before_submit(cfg for cfg, _ in jobs)
            planned = plan(jobs)
        except ConfigError as error:
            raise LaunchError(f"configuration error, nothing was submitted: {error}") from error
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        submission = Submission(
            planned, "slurm", self._executor, lambda name, after: self._executor(name, after, True)
        )
        state = Singleton.get_state()
        submission.submit(
            str(self.params["name"]),
            lambda i: (
                self,
                (
                    list(job_overrides[i]),
                    "hydra.sweep.dir",
                    numbers[i],
                    f"job_id_for_{numbers[i]}",
                    state,
                ),
            ),
            runs_per_job=int(self.params.get("runs_per_gpu") or 1),
        )
        log.info("%s", submission.summary())
        log.info("SLURM logs: %s", Path(str(self.params["submitit_folder"])).parent)
        if not self.params.get("wait", True):
            log.info(
                "not waiting (hydra.launcher.wait=false): the jobs run on. To collect, run the "
                "same command again: it waits for these jobs and submits nothing twice"
            )
            return [_returned(o, None) for o in job_overrides]
        outcomes = submission.wait()
        failed = failures(outcomes)
        if failed:
            raise LaunchError(
                f"{len(failed)} of {len(outcomes)} runs did not finish; rerunning the same "
                "command resumes them from their checkpoints (a run that failed needs its cause "
                "fixed first; see its error.txt):\n" + "\n".join(failed)
            )
        return [
            o.value if isinstance(o.value, JobReturn) else _returned(overrides, o.value)
            for o, overrides in zip(outcomes, job_overrides, strict=True)
        ]

    def _task_config(self, overrides: Sequence[str], number: int) -> tuple[DictConfig, Path]:
        """A job's config as its task will receive it, and its run directory."""
        assert self.config is not None and self.hydra_context is not None
        config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(config.hydra.job):
            config.hydra.job.num = number  # as the task sets it: a sweep subdir may use it
        run_dir = Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir)).absolute()
        with read_write(config), open_dict(config):
            del config["hydra"]
        return config, run_dir

    def _executor(self, name: str, after: Sequence[str], build: bool = False) -> Any:
        """An executor with this launcher's SLURM parameters (a build's own ones over them),
        for jobs that wait for ``after``."""
        from mhgd.cluster.executors import make_executor

        params = {k: v for k, v in self.params.items() if v is not None}
        if build:
            params.update(params.get("build") or {})
        folder = params.pop("submitit_folder")
        return make_executor(folder, "slurm", {**params, "name": name}, after=after)


def _returned(overrides: Sequence[str], value: Any) -> JobReturn:
    """What Hydra expects of a run that needed no job this time (finished, or left running)."""
    job_return = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    job_return._return_value = getattr(value, "last_score", value)
    return job_return
