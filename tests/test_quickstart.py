"""The README's quickstart, run as a newcomer runs it: the console script, W&B offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mhgd.records import RunDir, find_runs
from tests.helpers import tiny

pytestmark = pytest.mark.slow

CLEAR_MARGIN = 3.0  # points of top-1 the teacher must lead its student by


def mhgd_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MHGD_OUTPUTS": str(tmp_path / "outputs"),
        "MHGD_STORE": str(tmp_path / "store"),
        "WANDB_MODE": "offline",
    }
    command = [shutil.which("mhgd-train") or "mhgd-train", *overrides]
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=1800
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_quickstart_teacher_clearly_beats_its_student(tmp_path: Path, threads: int) -> None:
    """All three stages run; the teacher (whole training set) leads the student (10 images per
    class) by a clear margin whatever the thread count, and the run says so in words."""
    done = mhgd_train(tmp_path, "experiment=quickstart", f"runtime.threads={threads}")
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"last top-1 ([\d.]+)%.*run record in (\S+)", done.stdout)
    assert match, done.stdout
    accuracy, run_dir = float(match[1]), Path(match[2])
    teacher = re.search(r"Teacher vgg16, trained on the whole training set: ([\d.]+)%", done.stdout)
    student = re.search(
        r"Student vgg7 with MHGD \(A = 8 heads\), trained on 100 training images \(10 per "
        r"class\): ([\d.]+)%",
        done.stdout,
    )
    assert teacher and student, done.stdout
    assert float(student[1]) == accuracy
    assert float(teacher[1]) >= accuracy + CLEAR_MARGIN, done.stdout
    assert accuracy > 50.0  # ten classes: chance is 10%
    assert "points ahead of its student" in done.stdout
    assert re.search(
        r"Graph KL .*: [\d.e-]+ after the first epoch, [\d.e-]+ at the end", done.stdout
    )
    assert "add method.heads=0 probe_mhan=" in done.stdout

    record = RunDir(run_dir).read_record()
    assert RunDir(run_dir).read_result().status == "finished"
    assert record.artifacts.keys() == {"teacher", "mhan"}
    assert record.extra["train_subset"] == {"per_class": 10, "fraction": None, "images": 100}
    assert "eval/graph_kl" in RunDir(run_dir).read_metrics()[-1]
    stages = sorted(run.read_record().stage for run in find_runs(tmp_path / "store"))
    assert stages == ["mhan", "teacher"]
    teacher_record = RunDir(record.artifacts["teacher"]).read_record()
    assert "train_subset" not in teacher_record.extra  # the teacher saw every training image
    assert list((run_dir / "wandb").glob("offline-run-*"))


def test_teacher_checkpoint_takes_a_run_directory_mhgd_train_made(tmp_path: Path) -> None:
    """Run folders are named after their overrides ('seed=1,stage=teacher'): Hydra reads '='
    and ',' in a value as syntax, so the README quotes the path; that form must work."""
    settings = [o for o in tiny(tmp_path) if not o.startswith(("paths.store", "paths.outputs"))]
    teacher = mhgd_train(tmp_path, *settings, "name=mine", "stage=teacher", "seed=1")
    assert teacher.returncode == 0, teacher.stderr[-3000:]
    teacher_dir = Path(re.search(r"run record in (\S+)", teacher.stdout)[1])
    assert RunDir(teacher_dir).is_finished()
    assert "=" in teacher_dir.name and "," in teacher_dir.name

    unquoted = mhgd_train(
        tmp_path, *settings, "method=soft_logits", f"teacher_checkpoint={teacher_dir}"
    )
    assert unquoted.returncode != 0  # Hydra's override grammar, before mhgd sees it
    student = mhgd_train(
        tmp_path, *settings, "name=kd", "method=soft_logits", f"teacher_checkpoint='{teacher_dir}'"
    )
    assert student.returncode == 0, student.stderr[-3000:]
    run_dir = Path(re.search(r"run record in (\S+)", student.stdout)[1])
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "\"teacher_checkpoint='<its run directory>'\"" in readme  # the form that works
    given = teacher_dir / "checkpoint.pt"
    assert RunDir(run_dir).read_record().artifacts == {"teacher": str(given)}
