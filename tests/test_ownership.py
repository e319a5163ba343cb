"""One run, one owner: every identity is trained once, whatever folder or command asks for it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mhgd.engine.loop import Diverged
from mhgd.errors import ConfigError
from mhgd.files import LEASE_S, Busy, Lease
from mhgd.pipeline import run
from mhgd.records import RunDir, find_runs
from mhgd.slots import LINK_FILE
from tests.helpers import compose_config, tiny

pytestmark = pytest.mark.slow


def _train(tmp_path: Path, folder: str, *overrides: str, epochs: int = 1):
    cfg = compose_config(*tiny(tmp_path, *overrides, epochs=epochs))
    return run(cfg, tmp_path / "outputs" / folder)


def _attempts(tmp_path: Path, stage: str = "student") -> list[tuple[Path, int]]:
    """Every run of a stage below the test folder with how many times it started training."""
    found = {}
    for base in ("outputs", "store"):
        for run_dir in find_runs(tmp_path / base):
            if run_dir.read_record().stage == stage:
                found[run_dir.path.resolve()] = len(run_dir.read_attempts())
    return sorted(found.items())


def test_seed_written_out_reuses_the_default_run(tmp_path: Path) -> None:
    first = _train(tmp_path, "default")
    again = _train(tmp_path, "seed=0", "seed=0")
    assert again == first
    (only,) = _attempts(tmp_path)
    assert only == ((tmp_path / "outputs" / "default").resolve(), 1)
    link = json.loads((tmp_path / "outputs" / "seed=0" / LINK_FILE).read_text())
    assert link["run_dir"] == str((tmp_path / "outputs" / "default").resolve())


def test_zero_heads_is_the_student_alone(tmp_path: Path) -> None:
    _train(tmp_path, "alone", "method=none")
    _train(tmp_path, "heads0", "method=mhgd", "method.heads=0")
    (only,) = _attempts(tmp_path)
    assert only[1] == 1
    assert RunDir(only[0]).read_record().method == "none"


def test_changed_config_in_a_finished_folder_is_refused(tmp_path: Path) -> None:
    _train(tmp_path, "exp")
    with pytest.raises(ConfigError) as refused:
        _train(tmp_path, "exp", "schedule.lr=0.01")
    message = str(refused.value)
    assert "already holds another run" in message and "schedule.lr: 0.05 -> 0.01" in message


def test_mhan_is_a_function_of_its_key(tmp_path: Path) -> None:
    """Two fresh stores, students of different seeds: the same MHAN key, the same heads."""
    heads = []
    for seed in (0, 1):
        where = tmp_path / f"s{seed}"
        _train(where, "m", "method=mhgd", "method.heads=2", "method.mhan.epochs=1", f"seed={seed}")
        (mhan,) = (r for r in find_runs(where / "store") if r.read_record().stage == "mhan")
        heads.append(torch.load(mhan.path / "checkpoint.pt", weights_only=True)["task"]["heads"])
    assert heads[0].keys() == heads[1].keys()
    for name, tensor in heads[0].items():
        assert torch.equal(tensor, heads[1][name]), name


def test_two_identical_commands_train_once(tmp_path: Path) -> None:
    overrides = tiny(tmp_path, "method=none", epochs=3)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "mhgd.train", *overrides]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    outputs = [p.communicate(timeout=600)[0].decode() for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outputs
    (only,) = _attempts(tmp_path)
    assert only[1] == 1, outputs
    assert any("waiting for it" in out or "already finished" in out for out in outputs), outputs


def test_a_live_lease_names_its_owner_and_a_dead_one_is_taken_over(tmp_path: Path) -> None:
    slot = tmp_path / "slot"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from mhgd.files import Lease; "
            f"lease = Lease(Path({str(slot)!r})); assert lease.try_acquire(); "
            "print('held', flush=True); "
            "time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        with pytest.raises(Busy, match=f"pid {holder.pid}"), Lease(slot).held("x", wait=False):
            pass
    finally:
        holder.kill()
        holder.wait()
    # kill -9 left the marker behind; its process is gone, so the lease is free at once.
    start = time.monotonic()
    with Lease(slot).held("x", wait=False):
        assert Lease(slot).owner()["pid"] == os.getpid()
    assert time.monotonic() - start < LEASE_S


def test_a_diverging_teacher_fails_is_not_cached_and_starts_no_student(tmp_path: Path) -> None:
    diverge = ("method=soft_logits", "schedule.lr=1e6")
    with pytest.raises(Diverged, match="diverged"):
        _train(tmp_path, "student", *diverge)
    (teacher,) = (r for r in find_runs(tmp_path / "store") if r.read_record().stage == "teacher")
    assert teacher.read_result().status == "failed"
    assert "diverged" in teacher.read_result().error
    assert _attempts(tmp_path) == []  # no student started
    # Asked again, the failed teacher is neither handed on nor retrained behind the user's back.
    with pytest.raises(ConfigError, match="needs failed"):
        _train(tmp_path, "other", *diverge, "seed=1")
    assert len(teacher.read_attempts()) == 1
