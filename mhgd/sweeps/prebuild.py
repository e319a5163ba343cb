"""Build the cached artifacts (teachers, MHANs) trials share before the trials start.

Without this, every trial that needs the same missing teacher would start, find another job
training it, and hold its GPU idle until that is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from omegaconf import DictConfig

from mhgd.cluster.planning import Plan, plan
from mhgd.cluster.submission import ExecutorFor, Submission
from mhgd.sweeps.jobs import SweepAborted

log = logging.getLogger(__name__)


def prebuild(
    cluster: str, executor_for: ExecutorFor, jobs: Iterable[tuple[DictConfig, Path]]
) -> None:
    """Build the missing artifacts of these (config, run dir) jobs; raise if a build fails."""
    builds = plan(jobs).builds
    if not builds:
        return
    log.info("building shared artifacts first: %s", ", ".join(b.name for b in builds))
    submission = Submission(Plan([], builds), cluster, executor_for)
    submission.submit_builds()
    submission.wait()
    if failed := submission.failed_builds:
        names = ", ".join(builds[i].name for i in sorted(failed))
        raise SweepAborted(f"building {names} failed; see the job logs named above")
