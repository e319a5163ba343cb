"""mhgd-sweep with real Optuna storages and real jobs (local processes and the local SLURM).

Sweeps here train narrow networks on the digits data for 2-3 student epochs; most use the
student alone (method=none), which needs no teacher, so a trial costs a few seconds plus the
start of its Python process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from mhgd.records import RunDir
from mhgd.sweep import main
from mhgd.sweeps.algorithms import open_storage
from mhgd.sweeps.configs import compose
from mhgd.sweeps.space import override_value
from tests.helpers import tiny
from tests.slurm_support import REPO_ROOT, SlurmCluster

DONE = (TrialState.COMPLETE, TrialState.PRUNED)
# Seconds: a trial takes ~10 s here, more while other tests load the machine.
SWEEP_TIMEOUT_S = 300


def write_sweep(path: Path, **fields: Any) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def student_alone(tmp_path: Path, *extra: str, epochs: int = 2) -> list[str]:
    return tiny(tmp_path, "runtime.threads=1", *extra, epochs=epochs)


def load_trials(outputs: Path, study: str, storage: str | None = None) -> list[FrozenTrial]:
    where = storage or f"sqlite:///{outputs / study / 'optuna.db'}"
    loaded = optuna.load_study(study_name=study, storage=open_storage(where))
    return loaded.get_trials(deepcopy=False)


def epochs_of(run_dir: str) -> list[int]:
    return [row["epoch"] for row in RunDir(run_dir).read_metrics()]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


def run_bounded(*args: str) -> None:
    """mhgd-sweep in a process that must succeed within the bound (a lost cluster fails the
    test instead of hanging it)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mhgd.sweep", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=SWEEP_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"mhgd-sweep {' '.join(args)} did not end in {SWEEP_TIMEOUT_S} s: {exc.output}")
    assert done.returncode == 0, done.stdout + done.stderr


def controller(sweep_file: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    """A real mhgd-sweep process in its own process group (so a test can kill it with its jobs)."""
    return subprocess.Popen(
        [sys.executable, "-m", "mhgd.sweep", str(sweep_file), *args],
        cwd=REPO_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


# -- checks before anything is submitted --------------------------------------------------------
BASE_LINE = (
    "base: [dataset=digits, method=mhgd, teacher.width=0.125, student.width=0.125, "
    "logger.mode=disabled, paths.outputs={outputs}, paths.store={store}]"
)
GOOD_PARAM = "  method.heads: {type: categorical, choices: [1, 2]}"


@pytest.mark.parametrize(
    ("lines", "bad_line", "message"),
    [
        (["params:", GOOD_PARAM, "  method.nope: {type: int, low: 1, high: 4}"], 6, "method.nope"),
        (["params:", "  method.beta: {type: float, low: 2.0, high: 1.0}"], 5, "empty range"),
        (["sampler: {name: tpee, seed: 0}", "params:", GOOD_PARAM], 4, "unknown sampler 'tpee'"),
        (["params:", GOOD_PARAM, "executor:", "  partitoin: gpu"], 7, "partitoin"),
        (["launcher: slurm_gpuu", "params:", GOOD_PARAM], 4, "launcher profile 'slurm_gpuu'"),
        (["params:", GOOD_PARAM, "  method.heads: {type: int, low: 1, high: 2}"], 6, "twice"),
        # Ranges and choices are held to the method's typed schema before anything is submitted.
        (["params:", "  method.heads: {type: float, low: 0, high: 16}"], 5, "must be an integer"),
        (["params:", "  method.beta: {type: float, low: -1, high: 2}"], 5, "must be >= 0"),
        (["params:", "  method.student_k: {type: int, low: 0, high: 4}"], 5, "must be >= 1"),
        (["params:", "  method.sign: {type: categorical, choices: [sum, bogus]}"], 5, "sum, max"),
        (["params:", "  method.mhan.epochs: {type: int, low: 0, high: 3}"], 5, "must be >= 1"),
        (["params:", "  method.heads: {type: categorical, choices: [2, four]}"], 5, "integer"),
        (["grid:", "  method.heads: [1, 2]"], 4, "mhgd-train -m experiment="),
    ],
    ids=[
        "unknown-path",
        "empty-range",
        "unknown-sampler",
        "unknown-executor-key",
        "unknown-profile",
        "duplicate",
        "float-range-on-int",
        "negative-beta",
        "zero-student-k",
        "unknown-sign",
        "zero-mhan-epochs",
        "string-heads",
        "grid-file",
    ],
)
def test_bad_sweep_file_fails_naming_its_line_before_submitting(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    lines: list[str],
    bad_line: int,
    message: str,
) -> None:
    outputs = tmp_path / "outputs"
    header = [
        "study: bad",
        BASE_LINE.format(outputs=outputs, store=tmp_path / "store"),
        "trials: 2",
    ]
    sweep_file = tmp_path / "bad.yaml"
    sweep_file.write_text("\n".join([*header, *lines]) + "\n")

    assert main([str(sweep_file)]) == 2

    error = capsys.readouterr().err
    assert f"{sweep_file}:{bad_line}:" in error
    assert message in error
    assert not outputs.exists()  # no study, no job folder


def test_storage_password_from_the_environment_is_masked_in_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPTUNA_STORAGE", "sqlite://optuna:s3cret-pw@/optuna.db")
    sweep_file = write_sweep(
        tmp_path / "secret.yaml",
        study="secret",
        base=student_alone(tmp_path),
        trials=1,
        storage="$OPTUNA_STORAGE",
        params={"schedule.lr": {"type": "float", "low": 0.01, "high": 0.1}},
    )

    assert main([str(sweep_file)]) == 2

    error = capsys.readouterr().err
    assert "cannot open the Optuna storage sqlite://optuna:***@/optuna.db" in error
    assert "s3cret" not in error


def test_overrides_compose_back_to_the_same_values() -> None:
    values = [0.1, 1e-06, 3, -2, True, None, "none", "true", "1.5", "a b", "x/y.z", "it's"]
    overrides = [f"+probe{i}={override_value(value)}" for i, value in enumerate(values)]

    cfg = compose(overrides)

    assert [cfg[f"probe{i}"] for i in range(len(values))] == values


@pytest.mark.slow
@pytest.mark.parametrize("sweep_file", sorted((REPO_ROOT / "sweeps").glob("*.yaml")), ids=str)
def test_shipped_sweep_files_pass_every_check(sweep_file: Path) -> None:
    from mhgd.sweeps.controller import prepare_search
    from mhgd.sweeps.spec import load_spec

    spec = load_spec(sweep_file)
    assert prepare_search(spec).layout.study_dir.name == spec.study


# -- searches with real jobs --------------------------------------------------------------------
@pytest.mark.slow
def test_local_search_completes_and_trains_each_artifact_once(tmp_path: Path) -> None:
    sweep_file = write_sweep(
        tmp_path / "mhgd.yaml",
        study="mhgd",
        base=tiny(tmp_path, "method=mhgd", "method.mhan.epochs=1", "runtime.threads=1"),
        trials=3,
        in_flight=2,
        sampler={"name": "random", "seed": 1},
        pruner="none",
        params={
            "method.heads": {"type": "categorical", "choices": [1, 2]},
            "method.beta": {"type": "float", "low": 0.1, "high": 10.0, "log": True},
        },
    )

    assert main([str(sweep_file)]) == 0

    trials = load_trials(tmp_path / "outputs", "mhgd")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    store = tmp_path / "store"
    # One teacher for every trial, and one MHAN per head count the trials used.
    assert len([p for p in (store / "teacher").iterdir() if p.is_dir()]) == 1
    heads = {t.params["method.heads"] for t in trials}
    assert len([p for p in (store / "mhan").iterdir() if p.is_dir()]) == len(heads)
    teachers = set()
    for trial in trials:
        run = RunDir(trial.user_attrs["run_dir"])
        record, result = run.read_record(), run.read_result()
        assert {k: record.extra[k] for k in ("study", "trial", "sweep_phase")} == {
            "study": "mhgd",
            "trial": trial.number,
            "sweep_phase": "tune",
        }
        assert {"tune", "study:mhgd", f"trial:{trial.number}"} <= set(record.tags)
        assert record.hparams["heads"] == trial.params["method.heads"]
        assert run.read_config()["dataset"]["split"] == "tune"
        assert trial.value == result.last_score
        assert trial.intermediate_values == {
            row["epoch"]: row["score"] for row in run.read_metrics()
        }
        teachers.add(record.artifacts["teacher"])
    assert teachers == {str(next(p for p in (store / "teacher").iterdir() if p.is_dir()))}
    # The storage URL (it may hold a password) reaches jobs through their environment only.
    pickles = list((tmp_path / "outputs" / "mhgd" / "jobs").rglob("*_submitted.pkl"))
    assert pickles and not any(b"optuna.db" in p.read_bytes() for p in pickles)


@pytest.mark.slow
def test_median_pruner_prunes_a_trial_that_cannot_learn(tmp_path: Path) -> None:
    # The random sampler with seed 1 draws lr 1e-6, 0.05, 2e-6: the 2e-6 trial is far below
    # the median of the first two after its second epoch. (A repeated value would not train
    # again: the same identity reuses the finished run.)
    sweep_file = write_sweep(
        tmp_path / "prune.yaml",
        study="prune",
        base=student_alone(tmp_path, epochs=3),
        trials=3,
        sampler={"name": "random", "seed": 1},
        pruner={"name": "median", "n_startup_trials": 1, "n_warmup_steps": 2},
        params={"schedule.lr": {"type": "categorical", "choices": [0.05, 1e-6, 2e-6]}},
    )

    assert main([str(sweep_file)]) == 0

    trials = load_trials(tmp_path / "outputs", "prune")
    assert [t.params["schedule.lr"] for t in trials] == [1e-6, 0.05, 2e-6]
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.COMPLETE,
        TrialState.PRUNED,
    ]
    pruned = RunDir(trials[2].user_attrs["run_dir"])
    assert pruned.read_result().status == "pruned"
    assert not pruned.file("error.txt").exists()
    assert epochs_of(trials[2].user_attrs["run_dir"]) == [1, 2]
    assert trials[2].last_step == 2


@pytest.mark.slow
@pytest.mark.parametrize("with_jobs", [False, True], ids=["controller", "controller-and-jobs"])
def test_killed_controller_resumes_without_running_anything_twice(
    tmp_path: Path, with_jobs: bool
) -> None:
    outputs = tmp_path / "outputs"
    sweep_file = write_sweep(
        tmp_path / "kill.yaml",
        study="kill",
        base=student_alone(tmp_path, epochs=3),
        trials=3,
        in_flight=2,
        sampler={"name": "random", "seed": 0},
        pruner="none",
        params={"schedule.lr": {"type": "float", "low": 0.02, "high": 0.08}},
    )
    first_log = tmp_path / "first.log"
    first = controller(sweep_file, first_log)

    def one_done_one_halfway() -> bool:
        if "started as job" not in first_log.read_text():
            return False  # the study is not created yet
        trials = load_trials(outputs, "kill")
        running = [t for t in trials if t.state == TrialState.RUNNING and "run_dir" in t.user_attrs]
        return any(t.state == TrialState.COMPLETE for t in trials) and any(
            epochs_of(t.user_attrs["run_dir"]) for t in running
        )

    wait_until(one_done_one_halfway, SWEEP_TIMEOUT_S, "a finished trial and one mid-way")
    # SIGKILL the controller alone (its local jobs live on, like SLURM jobs would), or its
    # whole process group (the jobs die mid-epoch).
    if with_jobs:
        os.killpg(first.pid, signal.SIGKILL)
    else:
        os.kill(first.pid, signal.SIGKILL)
    first.wait()
    before = {t.number: t for t in load_trials(outputs, "kill")}
    finished_mtimes = {
        n: RunDir(t.user_attrs["run_dir"]).file("result.json").stat().st_mtime_ns
        for n, t in before.items()
        if t.state == TrialState.COMPLETE
    }

    assert main([str(sweep_file)]) == 0

    trials = load_trials(outputs, "kill")
    assert sum(t.state in DONE for t in trials) == 3
    for number, mtime in finished_mtimes.items():
        assert trials[number].user_attrs["job"] == before[number].user_attrs["job"]
        run_dir = RunDir(trials[number].user_attrs["run_dir"])
        assert run_dir.file("result.json").stat().st_mtime_ns == mtime
    # (a trial the kill caught between its submission and its ticket has no job to name)
    jobs = [t.user_attrs["job"]["job_id"] for t in trials if "job" in t.user_attrs]
    assert len(set(jobs)) == len(jobs)
    # The resumed controller counts the trials its predecessor left running against in_flight.
    assert most_at_once(trials) <= 2
    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not with_jobs:
        assert failed == [] and len(trials) == 3
        return
    assert failed, "the killed jobs' trials are marked failed"
    for trial in failed:
        [retry] = [t for t in trials if t.user_attrs.get("retry_of") == trial.number]
        assert retry.state == TrialState.COMPLETE
        assert retry.params == trial.params
        if "run_dir" in trial.user_attrs:  # (none if the kill came right after the ask)
            assert retry.user_attrs["run_dir"] == trial.user_attrs["run_dir"]
        # The retry resumed the killed run's checkpoint: every epoch once, none repeated.
        assert epochs_of(retry.user_attrs["run_dir"]) == [1, 2, 3]
    assert len(trials) == 3 + len(failed)


# A controller that dies the moment its first job is submitted, before it records the job.
DIES_AFTER_SUBMITTING = """
import os, sys
from mhgd.sweeps import controller

def die(*args, **kwargs):
    os._exit(3)

controller.Ticket.of = die
from mhgd.sweep import main
main([sys.argv[1]])
"""


@pytest.mark.slow
def test_a_trial_killed_before_its_ticket_is_retried_in_its_own_folder(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    sweep_file = write_sweep(
        tmp_path / "ticket.yaml",
        study="ticket",
        base=student_alone(tmp_path),
        trials=1,
        sampler={"name": "random", "seed": 0},
        pruner="none",
        params={"schedule.lr": {"type": "float", "low": 0.02, "high": 0.08}},
    )
    log = tmp_path / "died.log"
    with log.open("wb") as out:  # a file, not a pipe: the orphaned job keeps a pipe open
        died = subprocess.run(
            [sys.executable, "-c", DIES_AFTER_SUBMITTING, str(sweep_file)],
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=SWEEP_TIMEOUT_S,
        )
    assert died.returncode == 3, log.read_text()
    [orphan] = load_trials(outputs, "ticket")
    assert "job" not in orphan.user_attrs
    # The folder was recorded before the submission: a retry knows where the orphan trains.
    run_dir = orphan.user_attrs["run_dir"]

    assert main([str(sweep_file)]) == 0

    trials = load_trials(outputs, "ticket")
    assert trials[-1].state == TrialState.COMPLETE
    assert {t.user_attrs["run_dir"] for t in trials} == {run_dir}
    # One training, the orphan's: a retry waited for it (the run's lease) or found it done.
    assert epochs_of(run_dir) == [1, 2]
    assert [p.parent for p in outputs.rglob("result.json")] == [Path(run_dir)]


def most_at_once(trials: list[FrozenTrial]) -> int:
    """The most trials that were running at the same moment (start to end in the study)."""
    events = sorted(
        [(t.datetime_start, 1) for t in trials if t.datetime_start]
        + [(t.datetime_complete, -1) for t in trials if t.datetime_complete]
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.slow
def test_two_controllers_on_one_journal_share_the_trials(tmp_path: Path) -> None:
    sweep_file = write_sweep(
        tmp_path / "shared.yaml",
        study="shared",
        base=student_alone(tmp_path),
        trials=4,
        in_flight=1,
        storage="optuna.journal",
        sampler={"name": "random", "seed": 0},
        pruner="none",
        params={"schedule.lr": {"type": "float", "low": 0.02, "high": 0.08}},
    )
    controllers = [controller(sweep_file, tmp_path / f"controller{i}.log") for i in range(2)]
    for process in controllers:
        process.wait(timeout=SWEEP_TIMEOUT_S)
    assert [p.returncode for p in controllers] == [0, 0]

    journal = str(tmp_path / "outputs" / "shared" / "optuna.journal")
    trials = load_trials(tmp_path / "outputs", "shared", storage=journal)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
    assert len({t.user_attrs["job"]["job_id"] for t in trials}) == 4
    assert len({t.user_attrs["run_dir"] for t in trials}) == 4
    assert all(epochs_of(t.user_attrs["run_dir"]) == [1, 2] for t in trials)
    logs = "".join((tmp_path / f"controller{i}.log").read_text() for i in range(2))
    assert sorted(int(n) for n in re.findall(r"trial (\d+) started", logs)) == [0, 1, 2, 3]


@pytest.mark.slow
@pytest.mark.slurm
def test_slurm_search_then_confirmation_as_one_array(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    outputs = tmp_path / "outputs"
    sweep_file = write_sweep(
        tmp_path / "slurm.yaml",
        study="slurm",
        base=student_alone(tmp_path),
        trials=2,
        in_flight=2,
        sampler={"name": "random", "seed": 0},
        pruner="none",
        params={"schedule.lr": {"type": "float", "low": 0.02, "high": 0.08}},
        launcher="slurm_cpu",  # the profile mhgd-train -m uses, with one key over it
        executor={"timeout_min": 10},
        confirm={"top_k": 1, "seeds": [0, 1]},
    )

    run_bounded(str(sweep_file))
    trials = load_trials(outputs, "slurm")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert {t.user_attrs["job"]["cluster"] for t in trials} == {"slurm"}

    # The confirmation's controller is killed while its jobs run; the rerun waits for them.
    best = max(trials, key=lambda t: t.value)
    confirm_dir = outputs / "slurm" / "confirm" / f"trial-{best.number:04d}"
    first = controller(sweep_file, tmp_path / "confirm.log", "confirm")
    wait_until(lambda: any(confirm_dir.rglob("record.json")), SWEEP_TIMEOUT_S, "a confirm run")
    first.kill()
    first.wait()
    run_bounded(str(sweep_file), "confirm")
    jobs_dir = outputs / "slurm" / "jobs"
    array_tasks = [p.name for p in jobs_dir.iterdir() if re.fullmatch(r"\d+_\d+", p.name)]
    assert len(array_tasks) == 2 and len({name.split("_")[0] for name in array_tasks}) == 1
    array_id = array_tasks[0].split("_")[0]
    runs = [
        RunDir(outputs / "slurm" / "confirm" / f"trial-{best.number:04d}" / f"seed-{s}")
        for s in (0, 1)
    ]
    for seed, run in enumerate(runs):
        record = run.read_record()
        assert record.seed == seed and record.extra["sweep_phase"] == "confirm"
        assert record.extra["slurm_job_id"].startswith(array_id)
        assert record.extra["trial"] == best.number and record.extra["study"] == "slurm"
        assert {"confirm", "study:slurm", f"trial:{best.number}"} <= set(record.tags)
        assert run.read_config()["dataset"]["split"] == "final"
        assert run.read_config()["schedule"]["lr"] == best.params["schedule.lr"]
        assert run.read_result().status == "finished"
        assert len(run.read_attempts()) == 1  # trained once, by the first command's job
