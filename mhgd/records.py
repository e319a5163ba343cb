"""The run record: what every stage run leaves in its directory, and the only schema readers trust.

Written by the pipeline, read by the report and the sweep objective, so the file names and
fields live here and nowhere else. A run directory holds:

- ``config.yaml``   the resolved configuration (secrets redacted)
- ``record.json``   identity: stage, role, cell id, seed, git commit, W&B id, artifacts used
- ``metrics.jsonl`` one JSON object per finished epoch
- ``result.json``   outcome: status, last and best score, epochs, wall time (rewritten atomically)
- ``error.txt``     the traceback, when the run failed
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from mhgd.secrets import REDACTED, redact  # noqa: F401  (REDACTED: re-exported for readers)

SCHEMA = 1
CONFIG_FILE = "config.yaml"
RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"

STATUSES = ("running", "finished", "failed", "preempted", "pruned")


def stable_hash(payload: Any, length: int = 12) -> str:
    """A short hash of a JSON-able tree that ignores key order."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def cell_id(stage_config: Mapping[str, Any]) -> str:
    """The id shared by all seeds of one experimental cell: the stage config minus the seed."""
    return stable_hash({k: v for k, v in stage_config.items() if k != "seed"})


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that ran, with '+dirty' when the tree had local changes."""
    where = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def file_mode() -> int:
    """The mode ``open()`` gives a new file here: 0666 less the process's umask."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_file(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """A temporary file beside ``path``, fsynced and renamed over it when the block succeeds.

    The rename is atomic on POSIX file systems: a reader, a crash or a kill sees either the
    previous file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())  # mkstemp makes 0600: a store shared by a group must be readable
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    with atomic_file(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True, default=str)


@dataclass
class RunRecord:
    """Who a run is. ``role`` is "main" for the job a user asked for and "artifact" for a
    prerequisite stage built on its behalf (a cached teacher or MHAN), so a report of a sweep
    directory counts each experiment once."""

    stage: str
    role: str
    cell_id: str
    seed: int
    artifact_key: str
    method: str
    dataset: str
    model: str
    teacher: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    wandb_id: str | None = None
    wandb_project: str | None = None
    git_commit: str | None = None
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA


@dataclass
class RunResult:
    """How a run ended (or how far it got). ``score_name`` is "top1" (a classifier, in %),
    "cos" (an MHAN: mean cosine) or "neg_distill" (an init stage: minus its distillation loss);
    higher is better for all three."""

    status: str
    epochs_done: int
    epochs: int
    score_name: str
    last_score: float | None = None
    best_score: float | None = None
    best_epoch: int | None = None
    wall_time_s: float = 0.0
    error: str | None = None
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown run status {self.status!r}; expected one of {STATUSES}")


class RunDir:
    """Reads and writes the record files of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def file(self, name: str) -> Path:
        return self.path / name

    # -- writing ---------------------------------------------------------------------------
    def write_config(self, resolved: Mapping[str, Any]) -> None:
        import yaml

        with atomic_file(self.file(CONFIG_FILE)) as handle:
            yaml.safe_dump(redact(resolved), handle, sort_keys=False)

    def write_record(self, record: RunRecord) -> None:
        write_json_atomic(self.file(RECORD_FILE), redact(asdict(record)))

    def write_result(self, result: RunResult) -> None:
        write_json_atomic(self.file(RESULT_FILE), asdict(result))

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite the epoch log from the checkpointed history, so it never disagrees with it."""
        with atomic_file(self.file(METRICS_FILE)) as handle:
            handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in history)

    def write_error(self, text: str) -> None:
        self.file(ERROR_FILE).write_text(text)

    # -- reading ---------------------------------------------------------------------------
    def has_record(self) -> bool:
        return self.file(RECORD_FILE).is_file()

    def read_record(self) -> RunRecord:
        data = json.loads(self.file(RECORD_FILE).read_text())
        return RunRecord(**data)

    def read_result(self) -> RunResult | None:
        path = self.file(RESULT_FILE)
        return RunResult(**json.loads(path.read_text())) if path.is_file() else None

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.file(METRICS_FILE)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def read_config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.file(CONFIG_FILE).read_text())

    def is_finished(self) -> bool:
        result = self.read_result()
        return result is not None and result.status == "finished"


def find_runs(root: str | Path) -> Iterator[RunDir]:
    """Every run directory below ``root`` (or ``root`` itself), in a stable order."""
    base = Path(root)
    for path in sorted(base.rglob(RECORD_FILE)):
        yield RunDir(path.parent)
