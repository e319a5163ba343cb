"""Stop at a safe point on SIGUSR2 / SIGTERM, then let submitit requeue the job.

A signal handler runs between two bytecodes of the main thread, possibly halfway through an
optimiser step, so it must not save anything itself. It only records the signal; the training
loop checks the flag after every batch, writes a consistent checkpoint, and then hands the
signal to whatever handler was installed before ours: under submitit that handler requeues
the job (USR2) or logs it (SIGTERM). Without one, the loop raises ``Preempted``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

# SIGINT (Ctrl-C) too: the run checkpoints and ends as preempted, resumable, never failed.
WATCHED = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a signal after saving its checkpoint; rerunning resumes it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}; the checkpoint is saved")
        self.signum = signum

    def __reduce__(self) -> tuple[type[Preempted], tuple[int]]:
        """Pickled by submitit as a job's result: rebuild from the signal, not the message."""
        return (Preempted, (self.signum,))


class StopRequest:
    """The flag shared by the signal handler and the training loop."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def pending(self) -> bool:
        return self.signum is not None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Watch the signals for the duration of a stage (only possible in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in WATCHED}
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    def hand_over(self) -> None:
        """Give the signal to the previous handler (submitit's requeue), else raise Preempted."""
        assert self.signum is not None
        previous: Callable[[int, FrameType | None], Any] | Any = self._previous.get(self.signum)
        if callable(previous) and self.signum != signal.SIGINT:  # Ctrl-C: no KeyboardInterrupt
            previous(self.signum, None)
        raise Preempted(self.signum)
