"""The real pipeline on the digits data: records, exact resume, corrupt checkpoints, W&B."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from pathlib import Path

import pytest
import torch

from mhgd.engine.checkpoint import CheckpointError, load_checkpoint
from mhgd.engine.preemption import Preempted
from mhgd.pipeline import run
from mhgd.records import RunDir
from tests.helpers import compose_config, tiny

pytestmark = pytest.mark.slow


class Crash(RuntimeError):
    pass


def crash_after(epoch: int):
    def hook(row: dict) -> None:
        if row["epoch"] == epoch:
            raise Crash(f"simulated crash after epoch {epoch}")

    return hook


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoint.pt")["task"]["model"]


def scores(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "time_s"} for row in RunDir(run_dir).read_metrics()
    ]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-epoch student run (no teacher) to compare resumed runs against."""
    tmp = tmp_path_factory.mktemp("reference")
    run(compose_config(*tiny(tmp, epochs=3)), tmp / "run")
    return tmp / "run"


def test_run_record_is_complete(reference: Path) -> None:
    run_dir = RunDir(reference)
    record = run_dir.read_record()
    result = run_dir.read_result()
    config = run_dir.read_config()
    assert (record.stage, record.role, record.seed, record.method) == ("student", "main", 0, "none")
    assert len(record.cell_id) == 12 and record.git_commit
    assert config["student"]["name"] == "vgg7" and config["seed"] == 0
    metrics = run_dir.read_metrics()
    assert [row["epoch"] for row in metrics] == [1, 2, 3]
    assert {"lr", "score", "train/ce", "eval/top1", "eval/ce"} <= set(metrics[0])
    assert result.status == "finished" and result.epochs_done == result.epochs == 3
    assert result.last_score == metrics[-1]["score"]
    assert result.best_score == max(row["score"] for row in metrics)
    assert result.wall_time_s > 0


def test_finished_run_is_not_trained_again(reference: Path, tmp_path: Path) -> None:
    before = (reference / "checkpoint.pt").stat().st_mtime_ns
    result = run(compose_config(*tiny(tmp_path, epochs=3)), reference)
    assert result.status == "finished"
    assert (reference / "checkpoint.pt").stat().st_mtime_ns == before


def test_cell_id_ignores_seed_and_paths(reference: Path, tmp_path: Path) -> None:
    other = tmp_path / "seed1"
    run(compose_config(*tiny(tmp_path / "elsewhere", "seed=1", epochs=3)), other)
    first, second = RunDir(reference).read_record(), RunDir(other).read_record()
    assert first.cell_id == second.cell_id
    assert first.artifact_key != second.artifact_key


def test_resume_after_crash_is_exact(reference: Path, tmp_path: Path) -> None:
    cfg = compose_config(*tiny(tmp_path, epochs=3))
    with pytest.raises(Crash):
        run(cfg, tmp_path / "run", epoch_hook=crash_after(2))
    crashed = RunDir(tmp_path / "run")
    assert crashed.read_result().status == "failed"
    assert "simulated crash" in (tmp_path / "run" / "error.txt").read_text()
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["epoch"] == 2
    result = run(cfg, tmp_path / "run")
    assert result.status == "finished"
    assert scores(tmp_path / "run") == scores(reference)
    for name, tensor in weights(reference).items():
        assert torch.equal(tensor, weights(tmp_path / "run")[name]), name


def test_resume_after_mid_epoch_signal_is_exact(reference: Path, tmp_path: Path) -> None:
    cfg = compose_config(*tiny(tmp_path, epochs=3))
    run_dir = tmp_path / "run"

    def preempt_during_epoch_two() -> None:
        while not (run_dir / "metrics.jsonl").exists():
            threading.Event().wait(0.01)
        os.kill(os.getpid(), signal.SIGUSR2)

    sender = threading.Thread(target=preempt_during_epoch_two)
    sender.start()
    with pytest.raises(Preempted):
        run(cfg, run_dir)
    sender.join()
    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert RunDir(run_dir).read_result().status == "preempted"
    assert 1 <= state["epoch"] <= 2  # wherever the signal landed, at a batch boundary
    run(cfg, run_dir)
    assert scores(run_dir) == scores(reference)
    for name, tensor in weights(reference).items():
        assert torch.equal(tensor, weights(run_dir)[name]), name


def test_corrupt_checkpoint_stops_before_training(tmp_path: Path) -> None:
    cfg = compose_config(*tiny(tmp_path, epochs=2))
    with pytest.raises(Crash):
        run(cfg, tmp_path / "run", epoch_hook=crash_after(1))
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=str(checkpoint)):
        run(cfg, tmp_path / "run")
    assert len(checkpoint.read_bytes()) == 100


def test_wandb_offline_run_keeps_its_id_across_resume(tmp_path: Path) -> None:
    cfg = compose_config(*tiny(tmp_path, "logger.mode=offline", epochs=2))
    with pytest.raises(Crash):
        run(cfg, tmp_path / "run", epoch_hook=crash_after(1))
    run(cfg, tmp_path / "run")
    record = RunDir(tmp_path / "run").read_record()
    offline = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2
    # offline-run-<start second>-<id>, and W&B appends -1 when both starts fall in one second
    pattern = rf"offline-run-\d{{8}}_\d{{6}}-{record.wandb_id}(-\d+)?"
    assert all(re.fullmatch(pattern, path.name) for path in offline), offline
    assert json.loads((tmp_path / "run" / "result.json").read_text())["status"] == "finished"
