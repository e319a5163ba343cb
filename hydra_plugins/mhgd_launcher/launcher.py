"""hydra-submitit-launcher's SLURM launcher, with stage dependencies and requeue safety."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from textwrap import indent
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import CompactHydraException
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

if TYPE_CHECKING:
    import submitit

    from mhgd.cluster import ArtifactBuild


log = logging.getLogger(__name__)

# How much of a dead job's error output the launcher's error message quotes.
ERROR_TAIL_LINES = 12


class LaunchError(CompactHydraException):
    """Why a sweep was not submitted or did not finish; Hydra prints it without a traceback."""


class MhgdSlurmLauncher(SlurmLauncher):
    """Submits a multirun as one SLURM array, after the builds of the artifacts it lacks.

    Before the array it submits one job per missing teacher/MHAN chain (mhgd.cluster plans
    them from the configs) and makes the array depend on those jobs (``afterok``; SLURM
    cancels the tasks if a build fails). In a task, training stopped by SIGTERM ends the
    process without a result, so a requeued task is waited for rather than reported failed.
    """

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        from mhgd.cluster import leave_to_slurm
        from mhgd.engine.preemption import Preempted

        job_return = super().__call__(
            sweep_overrides, job_dir_key, job_num, job_id, singleton_state
        )
        # The exception the task raised (JobReturn.return_value would re-raise it).
        error = job_return._return_value if job_return.status is JobStatus.FAILED else None
        if isinstance(error, Preempted):
            leave_to_slurm(error)
        if error is not None:
            # Into the run's train.log and the job's submitit log, with the traceback.
            log.error("the job failed", exc_info=error)
        return job_return

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from mhgd.cluster import check_before_submit, plan_builds
        from mhgd.errors import ConfigError

        assert self.config is not None
        numbers = range(initial_job_idx, initial_job_idx + len(job_overrides))
        jobs = [
            self._task_config(overrides, number)
            for overrides, number in zip(job_overrides, numbers, strict=True)
        ]
        try:
            check_before_submit(cfg for cfg, _ in jobs)
        except ConfigError as error:
            raise LaunchError(f"configuration error, nothing was submitted: {error}") from error
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        builds = self._submit_builds(plan_builds(jobs))
        tasks = self._submit_array(job_overrides, numbers, [job.job_id for job, _ in builds])
        runs = [(task, run_dir) for task, (_, run_dir) in zip(tasks, jobs, strict=True)]
        for task, run_dir in runs:
            log.info("SLURM job %s -> %s", task.job_id, run_dir)
        log.info("SLURM logs: %s", Path(str(self.params["submitit_folder"])).parent)
        return self._results(builds, runs)

    def _submit_builds(self, builds: list[ArtifactBuild]) -> list[tuple[submitit.Job[Any], str]]:
        """One job per build, each after the build that trains its teacher."""
        from mhgd.cluster import BuildArtifactsJob

        submitted: list[tuple[submitit.Job[Any], str]] = []
        for build in builds:
            after = [] if build.after is None else [submitted[build.after][0].job_id]
            job = self._executor(build.name, after).submit(
                BuildArtifactsJob(build.cfg, build.run_dir)
            )
            submitted.append((job, build.name))
            waits = f" after job {after[0]}" if after else ""
            log.info("missing %s: SLURM job %s builds it%s", build.name, job.job_id, waits)
        return submitted

    def _submit_array(
        self, job_overrides: Sequence[Sequence[str]], numbers: range, after: list[str]
    ) -> list[submitit.Job[Any]]:
        """The multirun's jobs as one array: each task runs ``self`` (the Hydra job)."""
        count = len(job_overrides)
        return self._executor(str(self.params["name"]), after).map_array(
            self,
            [list(overrides) for overrides in job_overrides],
            ["hydra.sweep.dir"] * count,
            numbers,
            [f"job_id_for_{number}" for number in numbers],
            [Singleton.get_state()] * count,
        )

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

    def _executor(self, name: str, after: list[str]) -> submitit.AutoExecutor:
        """An executor with this launcher's SLURM parameters, for jobs that wait for ``after``."""
        import submitit

        params = dict(self.params, name=name)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"),
            cluster="slurm",
            slurm_max_num_timeout=params.pop("max_num_timeout"),
        )
        if after:
            params["dependency"] = "afterok:" + ":".join(after)
            # Without it, jobs whose build failed would stay pending (and the launcher wait)
            # forever.
            params["additional_parameters"] = {
                **(params.get("additional_parameters") or {}),
                "kill_on_invalid_dep": "yes",
            }
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{key if key in generic else f"slurm_{key}": value for key, value in params.items()}
        )
        return executor

    def _results(
        self,
        builds: list[tuple[submitit.Job[Any], str]],
        runs: list[tuple[submitit.Job[Any], Path]],
    ) -> list[JobReturn]:
        """Wait for every job; raise one error naming each job that ended without a result."""
        failures: list[str] = []
        for job, name in builds:
            _wait(job, f"build of {name}", failures)
        if failures:
            raise LaunchError(
                "a build of a prerequisite failed, so SLURM cancels the runs waiting for it:\n"
                + "\n".join(failures)
            )
        returns = [_wait(task, f"run {run_dir}", failures) for task, run_dir in runs]
        for job_return, (task, run_dir) in zip(returns, runs, strict=True):
            if job_return is not None and job_return.status is JobStatus.FAILED:
                log.error(
                    "run %s failed: see its train.log and error.txt, and the SLURM log %s",
                    run_dir,
                    task.paths.stderr,
                )
        if failures:
            raise LaunchError(
                f"{len(failures)} of {len(runs)} SLURM jobs ended without a result; rerunning "
                "the same command resumes them from their checkpoints:\n" + "\n".join(failures)
            )
        return returns


def _wait(job: submitit.Job[Any], what: str, failures: list[str]) -> Any:
    """The job's result, or None after adding why there is none to ``failures``."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    try:
        return job.result()
    except FailedJobError as error:
        failures.append(_failure(job, what, "raised an error", error))
    except UncompletedJobError as error:
        failures.append(_failure(job, what, f"ended {job.state} without a result", error))
    return None


def _failure(job: submitit.Job[Any], what: str, outcome: str, error: Exception) -> str:
    """One failed job for the launcher's error: what it ran, its logs, the end of its error."""
    # submitit ends a job's traceback with where its logs are: those are named here anyway.
    text = str(error).split("You can check full logs")[0]
    lines = [line for line in text.splitlines() if line.strip("- ")]
    return (
        f"- {what}: SLURM job {job.job_id} {outcome}; logs {job.paths.stdout} and "
        f"{job.paths.stderr.name}\n" + indent("\n".join(lines[-ERROR_TAIL_LINES:]), "    ")
    )
