"""File utilities shared by the engine, the records and the sweeps: atomic writes and leases.

Everything here must hold on the shared file systems clusters use (NFS, Lustre), where a plain
``flock`` may be unsupported or local to one node. Atomic writes rely only on ``rename``; run
ownership relies on filelock's ``SoftFileLease``: a marker file created with O_EXCL, refreshed
by a heartbeat thread while its holder lives, and taken over when its holder's process is gone
(same host) or its heartbeat has been stale for ``LEASE_S`` seconds (any host).
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from filelock import SoftFileLease, Timeout

log = logging.getLogger(__name__)

# Every process must agree on it: a holder whose heartbeat (every LEASE_S / 3) has not been
# seen for this long is dead, wherever it ran.
LEASE_S = 90.0
POLL_S = 2.0


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temporary file beside ``path``, fsynced and renamed over it when the block succeeds.

    The rename is atomic on POSIX file systems: a reader, a crash or a kill sees either the
    previous file or the new one, never half of one. The file gets the permissions of any
    other new file (the umask decides), so a store shared by a group stays readable.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strict_json(value: Any) -> Any:
    """A copy with non-finite floats as None: bare NaN/Infinity tokens are not JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(strict_json(payload), handle, indent=2, sort_keys=True, default=str)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def this_process() -> dict[str, Any]:
    """Who holds a lease: enough for a person (and ``scancel``) to find it."""
    owner: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}
    if job := os.environ.get("SLURM_JOB_ID"):
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        owner["slurm_job_id"] = f"{array}_{task}" if array and task else job
    return owner


def describe_owner(owner: dict[str, Any] | None) -> str:
    if not owner:
        return "another process (its owner file is not written yet)"
    where = f"pid {owner.get('pid')} on {owner.get('host')}"
    if job := owner.get("slurm_job_id"):
        where += f", SLURM job {job}"
    return where


class Busy(RuntimeError):
    """A live process owns what this one wanted to own."""

    def __init__(self, what: str, owner: dict[str, Any] | None) -> None:
        super().__init__(f"{what} is being trained by {describe_owner(owner)}")
        self.owner = owner


class Lease:
    """Exclusive ownership of ``path`` (a run slot) while this process holds it.

    The lease is the marker ``<path>.lock``; ``<path>.owner.json`` says who holds it, for
    messages and for reattaching to the job that trains it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_file = path.with_name(path.name + ".lock")
        self.owner_file = path.with_name(path.name + ".owner.json")
        self._lease: SoftFileLease | None = None

    def owner(self) -> dict[str, Any] | None:
        """The recorded owner, or None (free, or not written yet)."""
        try:
            return read_json(self.owner_file)
        except (OSError, ValueError):
            return None

    def try_acquire(self) -> bool:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        lease = SoftFileLease(str(self.lock_file), lease_duration=LEASE_S)
        try:
            lease.acquire(timeout=0)
        except Timeout:
            return False
        self._lease = lease
        write_json_atomic(self.owner_file, this_process())
        return True

    def release(self) -> None:
        if self._lease is not None:
            self.owner_file.unlink(missing_ok=True)
            self._lease.release()
            self._lease = None

    @contextmanager
    def held(self, what: str, *, wait: bool) -> Iterator[None]:
        """Own ``path`` for the block; a live owner is waited for (``wait``) or raises Busy."""
        announced = False
        while not self.try_acquire():
            owner = self.owner()
            if not wait:
                raise Busy(what, owner)
            if not announced:
                log.info("%s is owned by %s; waiting for it", what, describe_owner(owner))
                announced = True
            time.sleep(POLL_S)
        try:
            yield
        finally:
            self.release()
