"""The README's quickstart, run as a newcomer runs it: the console script, W&B offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mhgd.records import RunDir, find_runs

pytestmark = pytest.mark.slow


def test_quickstart_runs_all_stages_and_learns(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MHGD_OUTPUTS": str(tmp_path / "outputs"),
        "MHGD_STORE": str(tmp_path / "store"),
        "WANDB_MODE": "offline",
    }
    command = [shutil.which("mhgd-train") or "mhgd-train", "experiment=quickstart"]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"last top-1 ([\d.]+)%.*run record in (\S+)", done.stdout)
    assert match, done.stdout
    accuracy, run_dir = float(match[1]), Path(match[2])
    assert accuracy > 60.0  # ten classes: chance is 10%
    student = RunDir(run_dir)
    assert student.read_result().status == "finished"
    assert student.read_record().artifacts.keys() == {"teacher", "mhan"}
    stages = sorted(run.read_record().stage for run in find_runs(tmp_path / "store"))
    assert stages == ["mhan", "teacher"]
    assert list((run_dir / "wandb").glob("offline-run-*"))
