"""K runs in one job: small networks leave most of a GPU idle, so a job can train several.

Each packed run trains in its own process (its own record, checkpoint, W&B run, exact
resume), all on the job's GPU. The job forwards SLURM's signals to them: on SIGUSR2 (time
limit) or SIGTERM (preemption, ``scontrol requeue``) every run checkpoints and stops, then the
job requeues (or is requeued) as a single run's job would, and on restart every run resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any

import cloudpickle

from mhgd.cluster.jobs import PreemptibleJob
from mhgd.engine.preemption import WATCHED, Preempted


def _call(pickled: bytes) -> Any:
    """In the child: what submitit would have run (cloudpickle, as submitit pickles jobs)."""
    fn, args = cloudpickle.loads(pickled)
    return fn(*args)


class PackedRuns(PreemptibleJob):
    """Runs ``calls`` side by side in child processes; returns their results in order."""

    def __init__(self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]]) -> None:
        self.calls = list(calls)

    def work(self) -> list[Any]:
        stopped: list[int] = []
        os.environ["MHGD_RUNS_PER_GPU"] = str(len(self.calls))  # the runs' W&B config shows it
        context = multiprocessing.get_context("spawn")  # no CUDA state crosses a fork
        with ProcessPoolExecutor(len(self.calls), mp_context=context) as pool:
            futures: list[Future[Any]] = [
                pool.submit(_call, cloudpickle.dumps(call)) for call in self.calls
            ]

            def forward(signum: int, frame: object) -> None:
                stopped.append(signum)
                for process in list(getattr(pool, "_processes", {}).values()):
                    if process.pid is not None:
                        os.kill(process.pid, signum)

            previous = {sig: signal.signal(sig, forward) for sig in WATCHED}
            try:
                wait(futures)
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        if stopped:
            # Every run saved its checkpoint: now requeue (submitit's USR2 handler) or leave.
            handler = previous[stopped[0]]
            if callable(handler):
                handler(stopped[0], None)
            raise Preempted(stopped[0])
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:
            raise errors[0]  # the job is FAILED; every run's own record says how it ended
        return [f.result() for f in futures]
