"""The run record: what every stage run leaves in its directory, and the only schema readers trust.

Written by the pipeline, read by the report and the sweep objective, so the file names and
fields live here and nowhere else. A run directory holds:

- ``config.yaml``   the resolved configuration (secrets redacted)
- ``record.json``   identity: stage, role, cell id, seed, git commit, W&B id, artifacts used
- ``metrics.jsonl`` one JSON object per finished epoch
- ``result.json``   outcome: status, last and best score, epochs, wall time (rewritten atomically)
- ``error.txt``     the traceback, when the run failed
- ``attempts.jsonl`` one line per time a process started (or resumed) training it
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mhgd.files import atomic_file, strict_json, write_json_atomic
from mhgd.secrets import REDACTED, redact  # noqa: F401  (REDACTED: re-exported for readers)

SCHEMA = 2  # 2: the record carries its identity
CONFIG_FILE = "config.yaml"
RECORD_FILE = "record.json"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"
ATTEMPTS_FILE = "attempts.jsonl"

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


class RecordError(ValueError):
    """A record file that cannot be trusted: unreadable, truncated, or from a newer schema."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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
    identity: dict[str, Any] = field(default_factory=dict)
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
            for row in history:
                handle.write(json.dumps(strict_json(row), sort_keys=True) + "\n")

    def add_attempt(self, attempt: Mapping[str, Any]) -> None:
        """Append-only: who trained this run and when (a second line means a resume)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.file(ATTEMPTS_FILE), "a") as handle:
            handle.write(json.dumps(strict_json(dict(attempt)), sort_keys=True) + "\n")

    def read_attempts(self) -> list[dict[str, Any]]:
        path = self.file(ATTEMPTS_FILE)
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def write_error(self, text: str) -> None:
        self.file(ERROR_FILE).write_text(text)

    # -- reading ---------------------------------------------------------------------------
    def has_record(self) -> bool:
        return self.file(RECORD_FILE).is_file()

    def _read(self, name: str, kind: type[Any]) -> Any:
        """A record file as its dataclass, or RecordError naming the file and what is wrong."""
        path = self.file(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise RecordError(path, f"unreadable or truncated ({exc})") from exc
        if not isinstance(data, dict):
            raise RecordError(path, "not a JSON object")
        schema = data.get("schema", 1)
        if not isinstance(schema, int) or schema > SCHEMA:
            raise RecordError(
                path, f"written by a newer mhgd (schema {schema!r} > {SCHEMA}): upgrade"
            )
        try:
            return kind(**data)
        except (TypeError, ValueError) as exc:
            raise RecordError(path, f"fields do not match schema {SCHEMA} ({exc})") from exc

    def read_record(self) -> RunRecord:
        return self._read(RECORD_FILE, RunRecord)

    def read_result(self) -> RunResult | None:
        return self._read(RESULT_FILE, RunResult) if self.file(RESULT_FILE).is_file() else None

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
