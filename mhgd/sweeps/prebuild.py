"""Build the cached artifacts (teachers, MHANs) jobs share before the jobs themselves start.

Without this, every job that needs the same missing teacher would start, find another job
training it, and hold its GPU idle until that is done. mhgd.cluster plans one build job per
missing teacher/MHAN chain; builds that need a teacher another build trains run after it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import submitit
from omegaconf import DictConfig

from mhgd.cluster import BuildArtifactsJob, plan_builds
from mhgd.sweeps.jobs import SweepAborted, run_to_completion

log = logging.getLogger(__name__)


def prebuild(
    executor: submitit.AutoExecutor, jobs: Iterable[tuple[DictConfig, Path]], parallel: int
) -> None:
    """Build the missing artifacts of these (config, run dir) jobs; raise if a build fails."""
    builds = plan_builds(jobs)
    waves = [[b for b in builds if b.after is None], [b for b in builds if b.after is not None]]
    for wave in waves:
        if not wave:
            continue
        log.info("building shared artifacts first: %s", ", ".join(b.name for b in wave))
        calls = [BuildArtifactsJob(b.cfg, b.run_dir) for b in wave]
        for build, outcome in zip(wave, run_to_completion(executor, calls, parallel), strict=True):
            if isinstance(outcome, BaseException):
                raise SweepAborted(f"building {build.name} failed: {outcome}")
