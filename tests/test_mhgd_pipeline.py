"""MHGD's three stages through the real command, and reuse of cached stages across students."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mhgd.records import RunDir, find_runs
from tests.helpers import tiny

pytestmark = pytest.mark.slow


def train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mhgd.train", *tiny(tmp_path, epochs=2), *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def runs_of(root: Path, stage: str) -> list[RunDir]:
    return [run for run in find_runs(root) if run.read_record().stage == stage]


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mhgd")
    done = train(tmp, "method=mhgd", "method.heads=2", "method.mhan.epochs=3")
    assert "student finished" in done.stdout and "run record in" in done.stdout
    return tmp


def test_one_command_runs_all_three_stages(first: Path) -> None:
    (teacher,) = runs_of(first / "store", "teacher")
    (mhan,) = runs_of(first / "store", "mhan")
    (student,) = runs_of(first / "outputs", "student")
    for run in (teacher, mhan, student):
        assert run.is_finished(), run
    record = student.read_record()
    assert record.method == "mhgd" and record.hparams["heads"] == 2
    assert record.artifacts == {"teacher": str(teacher.path), "mhan": str(mhan.path)}
    assert teacher.read_record().role == mhan.read_record().role == "artifact"
    assert student.read_metrics()[0]["train/transfer"] > 0


def test_mhan_training_lowers_its_loss(first: Path) -> None:
    (mhan,) = runs_of(first / "store", "mhan")
    rows = mhan.read_metrics()
    assert len(rows) == 3
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert rows[-1]["eval/cos"] > rows[0]["eval/cos"]
    assert mhan.read_result().score_name == "cos"


def test_a_second_student_reuses_the_teacher_and_the_mhan(first: Path) -> None:
    (teacher,) = runs_of(first / "store", "teacher")
    (mhan,) = runs_of(first / "store", "mhan")
    stamps = {
        p: p.stat().st_mtime_ns for p in (teacher.file("checkpoint.pt"), mhan.file("checkpoint.pt"))
    }
    train(first, "method=mhgd", "method.heads=2", "method.mhan.epochs=3", "seed=1")
    assert len(runs_of(first / "store", "teacher")) == 1
    assert len(runs_of(first / "store", "mhan")) == 1
    assert all(path.stat().st_mtime_ns == stamp for path, stamp in stamps.items())
    students = runs_of(first / "outputs", "student")
    assert len(students) == 2
    assert {s.read_record().cell_id for s in students} == {students[0].read_record().cell_id}


def test_other_heads_train_a_new_mhan_on_the_same_teacher(first: Path) -> None:
    train(first, "method=mhgd", "method.heads=1", "method.mhan.epochs=3", "seed=2")
    assert len(runs_of(first / "store", "teacher")) == 1
    assert len(runs_of(first / "store", "mhan")) == 2


def test_zero_heads_trains_no_teacher(tmp_path: Path) -> None:
    train(tmp_path, "method=mhgd", "method.heads=0")
    assert not (tmp_path / "store" / "teacher").exists()
    assert not (tmp_path / "store" / "mhan").exists()
    (student,) = runs_of(tmp_path / "outputs", "student")
    assert student.read_record().teacher is None and student.is_finished()
    assert student.read_record().method == "none"  # the student alone: one cell with method=none
