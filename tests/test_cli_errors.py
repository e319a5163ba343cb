"""Bad input through the real ``mhgd-train``: one line naming the problem, no traceback, nothing
trained, for single runs and for every job of a multirun before the first is launched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.slurm_support import REPO_ROOT

# (overrides after debug=tiny, what the one line must say)
BAD_INPUTS = [
    (["method=mhgd", "method.heads=four"], "method.heads=four: must be an integer"),
    (["method=mhgd", "method.heads=2.5"], "method.heads=2.5: must be an integer"),
    (["method=mhgd", "method.beta=-1"], "method.beta=-1.0: must be >= 0"),
    (["method=mhgd", "method.beta=nan"], "method.beta=nan: must be a finite number"),
    (["method=kdsvd", "method.student_k=0"], "method.student_k=0: must be >= 1"),
    (["method=mhgd", "method.sign=bogus"], "method.sign=bogus: choose one of sum"),
    (["method=kdsvdf", "method.sign=bogus"], "method.sign=bogus: choose one of sum"),
    (["method=mhgd", "method.mhan.epochs=0"], "method.mhan.epochs=0: must be >= 1"),
    (["method=mhgd", "method.mhan.lr=-0.1"], "method.mhan.lr=-0.1: must be > 0"),
    (["method=fsp", "method.init.epochs=0"], "method.init.epochs=0: must be >= 1"),
    (["method=ab", "method.margin=0"], "method.margin=0.0: must be > 0"),
    (["method=soft_logits", "method.tau=0"], "method.tau=0.0: must be > 0"),
    (["method=mhgd", "+method.head=4"], "method.head: unknown key"),
    (["schedule.epochs=0"], "schedule.epochs=0: must be >= 1"),
    (["schedule.lr=0"], "schedule.lr=0.0: must be > 0"),
    (["schedule.milestones=abc"], "schedule.milestones=abc: must be a list of integers"),
    (["optim.batch_size=0"], "optim.batch_size=0: must be >= 1"),
    (["optim.momentum=1.5"], "optim.momentum=1.5: must be < 1"),
    (["optim=nope"], "optim=nope: must be a section of keys"),
    (["teacher.width=0"], "teacher.width=0.0: must be > 0"),
    (["student.name=vgg99"], "unknown model 'vgg99'"),
    (["method.name=nope"], "unknown method 'nope': choose one of ab, fsp"),
    (["stage=mentor"], "stage=mentor: choose one of teacher, student"),
    (["seed=-1"], "seed=-1: must be >= 0"),
    (["seed=1.5"], "seed=1.5: must be an integer"),
    (["runtime.device=gpu"], "runtime.device=gpu: must match"),
    (["runtime.threads=0"], "runtime.threads=0: must be >= 1"),
    (["runtime.bf16=maybe"], "runtime.bf16=maybe: must be true or false"),
    (["dataset.split=validation"], "dataset.split=validation: choose one of final, tune"),
    (["dataset.val_size=10"], "val_size=10 only applies to split='tune'"),
    (["logger.mode=bogus"], "logger.mode=bogus: choose one of auto"),
    (["+bogus=1"], "bogus: unknown key"),
    (["name=a/b"], "name=a/b: must match"),
    (["method=mhgd", "model@teacher=wrn22_4"], "MHGD pairs sensing points one to one"),
    (["dataset=cifar100", "paths.data=/nonexistent"], "CIFAR-100 file not found"),
    (["dataset=tinyimagenet", "paths.data=/nonexistent"], "TinyImageNet not found"),
    (["teacher_checkpoint=/nonexistent"], "teacher_checkpoint=/nonexistent does not exist"),
    # the student's subset is smaller than a batch: refused before the teacher trains
    (["method=mhgd", "dataset.subset.per_class=3"], "student stage trains on 30 images"),
    (["dataset.subset.per_class=1000"], "class 0 has only 142 training images"),
    (["paths.outputs=/proc/no-such-folder"], "cannot create the output folder"),
]


def mhgd_train(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        MHGD_OUTPUTS=str(tmp_path / "outputs"),
        MHGD_STORE=str(tmp_path / "store"),
        PYTHONPATH=str(REPO_ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "mhgd.train", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=lambda v: " ".join(v))
def test_bad_input_is_one_line_before_any_compute(
    tmp_path: Path, overrides: list[str], message: str
) -> None:
    result = mhgd_train(tmp_path, "debug=tiny", *overrides)

    assert result.returncode == 2
    assert message in one_line(result)
    assert not list(tmp_path.rglob("checkpoint.pt"))


def test_a_teacher_checkpoint_that_is_no_checkpoint_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")

    result = mhgd_train(tmp_path, "debug=tiny", "method=mhgd", f"teacher_checkpoint={junk}")

    assert result.returncode == 2
    assert f"teacher_checkpoint={junk} is not a teacher checkpoint" in one_line(result)


def test_a_multirun_checks_every_job_before_launching_any(tmp_path: Path) -> None:
    # The bad value is in the last job: the first two would train if jobs were checked lazily.
    result = mhgd_train(tmp_path, "-m", "debug=tiny", "method=mhgd", "method.beta=1,2,-1")

    assert result.returncode == 2
    line = one_line(result)
    assert "nothing was launched" in line and "job 2" in line
    assert "method.beta=-1.0: must be >= 0" in line
    assert not (tmp_path / "outputs").exists()


def test_a_multirun_of_an_experiment_grid_checks_the_grid(tmp_path: Path) -> None:
    # Table 4's grid comes from the experiment file; a bad extra value fails all 30 jobs at once.
    result = mhgd_train(tmp_path, "-m", "experiment=table4/vgg_heads", "method.sign=bogus")

    assert result.returncode == 2
    assert "job 0 (method.heads=0 seed=0" in one_line(result)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT], ids=["TERM", "USR2", "INT"]
)
def test_a_local_stop_signal_ends_with_one_line_naming_the_checkpoint(
    tmp_path: Path, signum: signal.Signals
) -> None:
    env = dict(
        os.environ,
        MHGD_OUTPUTS=str(tmp_path / "outputs"),
        MHGD_STORE=str(tmp_path / "store"),
        PYTHONPATH=str(REPO_ROOT),
    )
    command = [sys.executable, "-m", "mhgd.train", "debug=tiny", "stage=teacher"]
    process = subprocess.Popen(
        [*command, "schedule.epochs=400", "schedule.milestones=[]"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(tmp_path.rglob("metrics.jsonl")):  # training has started
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + signum
    [result] = tmp_path.rglob("result.json")
    assert json.loads(result.read_text())["status"] == "preempted"  # resumable, not failed
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr
    [checkpoint] = tmp_path.rglob("checkpoint.pt")
    assert lines[-1] == (
        f"mhgd-train: stopped by {signum.name}; resume from checkpoint {checkpoint} by running "
        "the same command again"
    )
