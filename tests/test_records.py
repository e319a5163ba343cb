"""The run-record helpers: secret masking, stable ids, atomic files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mhgd.records import REDACTED, RunResult, cell_id, redact, stable_hash, write_json_atomic


def test_secret_keys_and_url_passwords_are_masked() -> None:
    config = {
        "logger": {"project": "mhgd", "api_key": "abc123", "WANDB_TOKEN": "t0k3n"},
        "storage": "postgresql://alice:s3cr3t@db.example:5432/optuna",
        "urls": ["mysql+pymysql://bob:hunter2@host/db", "sqlite:///study.db"],
        "password": None,
        "lr": 0.1,
    }
    masked = redact(config)
    assert masked["logger"] == {"project": "mhgd", "api_key": REDACTED, "WANDB_TOKEN": REDACTED}
    assert masked["storage"] == f"postgresql://alice:{REDACTED}@db.example:5432/optuna"
    assert masked["urls"] == [f"mysql+pymysql://bob:{REDACTED}@host/db", "sqlite:///study.db"]
    assert masked["password"] is None and masked["lr"] == 0.1
    text = json.dumps(masked)
    assert not any(secret in text for secret in ("abc123", "t0k3n", "s3cr3t", "hunter2"))
    assert config["logger"]["api_key"] == "abc123"  # the input is not modified


def test_secret_environment_values_are_masked_wherever_they_appear(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef")
    masked = redact({"note": "key=0123456789abcdef", "lr": 0.1})
    assert masked == {"note": f"key={REDACTED}", "lr": 0.1}


def test_ids_ignore_key_order_and_the_cell_ignores_the_seed() -> None:
    a = {"stage": "student", "model": {"name": "vgg7", "width": 1.0}, "seed": 0}
    b = {"seed": 3, "model": {"width": 1.0, "name": "vgg7"}, "stage": "student"}
    assert cell_id(a) == cell_id(b)
    assert stable_hash(a) != stable_hash(b)
    assert cell_id(a) != cell_id({**a, "model": {"name": "vgg7", "width": 0.5}})


def test_atomic_json_replaces_whole_files(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, {"status": "running"})
    write_json_atomic(path, {"status": "finished"})
    assert json.loads(path.read_text()) == {"status": "finished"}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown run status"):
        RunResult(status="done", epochs_done=1, epochs=1, score_name="top1")
