"""Cluster execution: real `mhgd-train -m hydra/launcher=slurm_cpu` sweeps on the local SLURM.

The sweeps run from a scratch directory, as a user would run them from their project, with
the profiles found through `-cd slurm`. Every wait is bounded: a lost job fails its test (and
its jobs are cancelled) instead of hanging CI. Tiny runs: narrow VGGs on the digits data.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml
from omegaconf import DictConfig

from mhgd.cluster.planning import check_before_submit, plan
from mhgd.errors import ConfigError
from mhgd.records import RunDir, RunResult, find_runs
from mhgd.stages import prerequisites
from tests.helpers import compose_config, tiny
from tests.slurm_support import REPO_ROOT, SlurmCluster

PROFILES = REPO_ROOT / "slurm"
# One CPU thread everywhere: runs on the cluster and off it compute the same numbers.
THREADS = "runtime.threads=1"
MHGD = ("method=mhgd", "method.mhan.epochs=1", "method.heads=2,4")
# Seconds. A task spends ~12 s starting (imports, data) on this 2-core machine before it
# trains; a requeued job restarts ~15 s after it stopped.
SWEEP_TIMEOUT_S = 300
JOB_START_TIMEOUT_S = 120
ACCOUNTING_TIMEOUT_S = 60


# -- without SLURM: profiles, planning, checks --------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("profile", "partition", "gpus"), [("slurm_gpu", "gpu", 1), ("slurm_cpu", "local", None)]
)
@pytest.mark.parametrize("config_dir", [["-cd", str(PROFILES)], []], ids=["cd", "no-cd"])
def test_profiles_select_the_mhgd_launcher_from_any_directory(
    tmp_path: Path, profile: str, partition: str, gpus: int | None, config_dir: list[str]
) -> None:
    shown = subprocess.run(
        ["mhgd-train", *config_dir, f"hydra/launcher={profile}", "--cfg", "hydra"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr  # e.g. hydra_plugins.mhgd_launcher not installed
    launcher = yaml.safe_load(shown.stdout)["hydra"]["launcher"]

    assert launcher["_target_"] == "hydra_plugins.mhgd_launcher.launcher.MhgdSlurmLauncher"
    assert (launcher["partition"], launcher["gpus_per_node"]) == (partition, gpus)
    assert launcher["max_num_timeout"] > 0
    assert launcher["submitit_folder"] == "${hydra.sweep.dir}/.submitit/%j"
    assert "export WANDB_MODE=offline" in launcher["setup"]


def student_jobs(tmp_path: Path, *overrides: str) -> list[tuple[DictConfig, Path]]:
    """Two seeds of a student config, with their run directories, as the launcher plans them."""
    return [
        (compose_config(*tiny(tmp_path), *job), tmp_path / ",".join(job))
        for job in ((*overrides, f"seed={seed}") for seed in (0, 1))
    ]


def mark_finished(run_dir: Path) -> None:
    RunDir(run_dir).write_result(
        RunResult(status="finished", epochs_done=2, epochs=2, score_name="top1")
    )


def test_plan_builds_each_missing_artifact_once(tmp_path: Path) -> None:
    jobs = [
        job
        for heads in (2, 4)
        for job in student_jobs(tmp_path, "method=mhgd", f"method.heads={heads}")
    ]
    teacher, mhan_2 = prerequisites(jobs[0][0])
    _, mhan_4 = prerequisites(jobs[2][0])

    planned = plan(jobs)
    builds = planned.builds

    assert [(b.artifacts, b.after) for b in builds] == [((teacher, mhan_2), None), ((mhan_4,), 0)]
    assert builds[0].name == f"teacher-{teacher.key}+mhan-{mhan_2.key}"
    # Each run waits for the builds it needs only: one array per set of builds.
    assert [run.builds for run in planned.runs] == [(0,), (0,), (0, 1), (0, 1)]
    assert planned.groups() == {(0,): [0, 1], (0, 1): [2, 3]}


def test_plan_builds_skips_finished_artifacts(tmp_path: Path) -> None:
    jobs = student_jobs(tmp_path, "method=mhgd")
    teacher, mhan = prerequisites(jobs[0][0])

    mark_finished(teacher.run_dir)
    only_mhan = plan(jobs).builds
    mark_finished(mhan.run_dir)

    assert [(b.artifacts, b.after) for b in only_mhan] == [((mhan,), None)]
    assert plan(jobs).builds == []
    assert plan(student_jobs(tmp_path, "method=none")).builds == []


def test_check_before_submit_raises_the_jobs_config_error(tmp_path: Path) -> None:
    good, _ = student_jobs(tmp_path, "method=mhgd")[0]
    bad, _ = student_jobs(tmp_path, "student.name=vgg99")[0]

    check_before_submit([good])
    with pytest.raises(ConfigError, match="unknown model 'vgg99'"):
        check_before_submit([good, bad])


# -- on the local SLURM cluster ----------------------------------------------------------------
def sweep_dir(tmp_path: Path) -> Path:
    return tmp_path / "outputs" / "default"


def start_sweep(tmp_path: Path, *overrides: str, epochs: int = 1) -> subprocess.Popen[str]:
    """`mhgd-train -m` with the CPU profile, from tmp_path as its working directory."""
    command = ["mhgd-train", "-cd", str(PROFILES), "-m", "hydra/launcher=slurm_cpu"]
    command += [*tiny(tmp_path, THREADS, *overrides, epochs=epochs)]
    return subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def job_ids(sweep: Path) -> list[str]:
    """Jobs the sweep submitted, from submitit's folders: builds "N", array tasks "N_i"."""
    folders = (sweep / ".submitit").glob("*/*_submitted.pkl")
    return sorted({pickle.parent.name for pickle in folders})


def cancel_jobs(sweep: Path) -> None:
    for job_id in job_ids(sweep):
        subprocess.run(["scancel", job_id], check=False, timeout=30)


def finish(sweep: subprocess.Popen[str], where: Path, timeout_s: float = SWEEP_TIMEOUT_S) -> str:
    """The launcher's output once it exits; a launcher still waiting at the bound fails."""
    try:
        output, _ = sweep.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        sweep.kill()
        cancel_jobs(where)
        output, _ = sweep.communicate()
        pytest.fail(f"mhgd-train -m did not return in {timeout_s} s:\n{output[-3000:]}")
    return output


def wait_for_run(
    sweep: subprocess.Popen[str], where: Path, ready: Callable[[RunDir], bool], what: str
) -> Path:
    """The first run directory in ``where`` that is ``ready``, while the sweep still waits."""
    deadline = time.monotonic() + JOB_START_TIMEOUT_S
    while time.monotonic() < deadline and sweep.poll() is None:
        for run in find_runs(where):
            if ready(run):
                return run.path
        time.sleep(0.2)
    output = finish(sweep, where, timeout_s=1)
    pytest.fail(f"no run in {where} {what} in {JOB_START_TIMEOUT_S} s:\n{output[-3000:]}")


def trained(epochs: int) -> Callable[[RunDir], bool]:
    return lambda run: len(run.read_metrics()) >= epochs


def resumes(run_dir: Path) -> int:
    """How often the run restarted from its checkpoint (the training loop logs each time)."""
    return (run_dir / "train.log").read_text().count("resumed from")


def accounting(ids: Sequence[str]) -> list[dict[str, str]]:
    """sacct's final record of each job (slurmdbd receives them a moment after the end)."""
    fields = ["JobID", "JobName", "State", "Start", "End"]
    command = ["sacct", "-X", "--noheader", "--parsable2", "-o", ",".join(fields)]
    deadline = time.monotonic() + ACCOUNTING_TIMEOUT_S
    while True:
        listing = subprocess.run(
            [*command, "-j", ",".join(ids)], capture_output=True, text=True, check=True, timeout=30
        ).stdout
        rows = [dict(zip(fields, line.split("|"), strict=True)) for line in listing.splitlines()]
        settled = all(row["State"] not in ("PENDING", "RUNNING") for row in rows)
        if settled or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def is_build(row: dict[str, str]) -> bool:
    """A build job is named after the artifacts it trains (teacher-<key>+mhan-<key>)."""
    return row["JobName"].startswith(("teacher-", "mhan-"))


def scores(run_dir: Path) -> list[dict]:
    return [
        {k: v for k, v in row.items() if k != "time_s"} for row in RunDir(run_dir).read_metrics()
    ]


@pytest.mark.slow
@pytest.mark.slurm
def test_two_configs_by_two_seeds_run_as_one_array(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    started = time.monotonic()
    sweep = start_sweep(tmp_path, "optim.weight_decay=0.0005,0.001", "seed=0,1")
    finish(sweep, sweep_dir(tmp_path))
    record_property("wall_time_s", round(time.monotonic() - started, 1))

    assert sweep.returncode == 0
    runs = list(find_runs(sweep_dir(tmp_path)))
    assert len(runs) == 4
    assert {
        (run.read_config()["optim"]["weight_decay"], run.read_record().seed) for run in runs
    } == {(wd, seed) for wd in (0.0005, 0.001) for seed in (0, 1)}
    assert all(run.is_finished() for run in runs)
    tasks = job_ids(sweep_dir(tmp_path))
    array = tasks[0].split("_")[0]
    assert tasks == [f"{array}_{index}" for index in range(4)]
    assert {row["State"] for row in accounting(tasks)} == {"COMPLETED"}


@pytest.mark.slow
@pytest.mark.slurm
def test_students_wait_for_one_build_of_their_teacher(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    started = time.monotonic()
    sweep = start_sweep(tmp_path, *MHGD, "+hydra.launcher.build.timeout_min=7")
    output = finish(sweep, sweep_dir(tmp_path))
    record_property("wall_time_s", round(time.monotonic() - started, 1))

    assert sweep.returncode == 0, output[-3000:]
    rows = {row["JobID"]: row for row in accounting(job_ids(sweep_dir(tmp_path)))}
    builds = sorted(job for job, row in rows.items() if is_build(row))
    assert len(builds) == 2  # teacher + MHAN(A=2); MHAN(A=4)
    limits = subprocess.run(
        ["sacct", "-X", "--noheader", "--parsable2", "-o", "JobID,Timelimit", "-j", ",".join(rows)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    # Builds take their own SLURM parameters (hydra.launcher.build), runs the profile's.
    assert {line.split("|")[1] for line in limits if line.split("|")[0] in builds} == {"00:07:00"}
    assert {line.split("|")[1] for line in limits if line.split("|")[0] not in builds} == {
        "01:00:00"
    }
    artifacts = [run.read_record() for run in find_runs(tmp_path / "store")]
    trained_by = {
        (r.stage, r.hparams.get("heads")): r.extra["slurm_job_id"]
        for r in artifacts
        if r.role == "artifact"
    }
    # One teacher, trained by the first build (not by a student), as was the first MHAN.
    assert trained_by == {
        ("teacher", None): builds[0],
        ("mhan", 2): builds[0],
        ("mhan", 4): builds[1],
    }
    students = {run.read_record().hparams["heads"]: run for run in find_runs(sweep_dir(tmp_path))}
    assert sorted(students) == [2, 4]
    assert all(run.is_finished() for run in students.values())
    assert {row["State"] for row in rows.values()} == {"COMPLETED"}
    assert rows[builds[1]]["Start"] >= rows[builds[0]]["End"]
    # Each student waits for exactly the builds it needs (A = 2 not for A = 4's MHAN).
    student_job = {
        heads: run.read_record().extra["slurm_job_id"] for heads, run in students.items()
    }
    assert rows[student_job[4]]["Start"] >= rows[builds[1]]["End"]
    assert rows[student_job[2]]["Start"] >= rows[builds[0]]["End"]
    assert student_job[2].split("_")[0] != student_job[4].split("_")[0]  # two arrays


@pytest.mark.slow
@pytest.mark.slurm
def test_requeued_run_resumes_to_the_uninterrupted_result(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """Stopped twice: USR2 (submitit's time-limit path: checkpoint, requeue itself) and
    `scontrol requeue` (SIGTERM, as on preemption). The launcher waits through both."""
    started = time.monotonic()
    sweep = start_sweep(tmp_path, "seed=0", epochs=6)
    reference = subprocess.Popen(
        ["mhgd-train", *tiny(tmp_path / "reference", THREADS, "seed=0", epochs=6)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    run_dir = wait_for_run(sweep, sweep_dir(tmp_path), trained(1), "trained an epoch")
    [job] = job_ids(sweep_dir(tmp_path))
    subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)

    def resumed_and_trained(run: RunDir) -> bool:
        return resumes(run.path) == 1 and trained(2)(run)

    wait_for_run(sweep, sweep_dir(tmp_path), resumed_and_trained, "resumed and trained on")
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    output = finish(sweep, sweep_dir(tmp_path))
    reference.wait(timeout=SWEEP_TIMEOUT_S)
    record_property("wall_time_s", round(time.monotonic() - started, 1))

    assert sweep.returncode == 0, output[-3000:]
    assert RunDir(run_dir).is_finished()
    assert resumes(run_dir) == 2
    [expected] = find_runs(tmp_path / "reference" / "outputs")
    assert len(scores(run_dir)) == 6
    assert scores(run_dir) == scores(expected.path)


def slurm_job_of(run_dir: Path) -> str:
    """Where a user finds a run's SLURM job: Hydra records it in the run's .hydra/hydra.yaml."""
    return yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"]


@pytest.mark.slow
@pytest.mark.slurm
def test_failed_and_cancelled_runs_fail_the_sweep_with_their_logs(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """Task 0 raises (its loss diverges: a valid config can still fail), task 1 is cancelled
    while it trains."""
    sweep = start_sweep(tmp_path, "schedule.lr=1e6,0.05", epochs=30)
    cancelled = wait_for_run(sweep, sweep_dir(tmp_path), trained(1), "trained an epoch")
    job = slurm_job_of(cancelled)

    subprocess.run(["scancel", job], check=True, timeout=30)
    cancelled_at = time.monotonic()
    output = finish(sweep, sweep_dir(tmp_path), timeout_s=120)
    record_property("cancel_to_exit_s", round(time.monotonic() - cancelled_at, 1))

    assert sweep.returncode != 0
    assert "2 of 2 runs did not finish" in output
    assert f"run {cancelled}: job {job} ended CANCELLED" in output
    assert str(sweep_dir(tmp_path) / ".submitit" / job / f"{job}_0_log.out") in output
    assert "hydra/_internal" not in output  # the error names jobs and logs; no launcher stack
    result = RunDir(cancelled).read_result()
    assert (result.status, result.epochs_done) == (
        "preempted",
        len(RunDir(cancelled).read_metrics()),
    )
    assert (cancelled / "checkpoint.pt").is_file()
    [failed] = [run.path for run in find_runs(sweep_dir(tmp_path)) if run.path != cancelled]
    assert f"run {failed}: job {slurm_job_of(failed)} raised an error" in output, output[-4000:]
    assert "diverged" in output  # the last lines of its error
    # A run that raised is FAILED for SLURM too, not COMPLETED.
    assert [row["State"] for row in accounting([slurm_job_of(failed)])] == ["FAILED"]
    assert "diverged" in (failed / "error.txt").read_text()
    assert "Traceback" in (failed / "train.log").read_text()
    assert RunDir(failed).read_result().status == "failed"


@pytest.mark.slow
@pytest.mark.slurm
def test_failed_build_cancels_its_students_and_names_the_cause(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """CIFAR-100 is missing on the nodes: the teacher's build fails, its students never run."""
    started = time.monotonic()
    missing_data = f"paths.data={tmp_path / 'no-data'}"
    sweep = start_sweep(tmp_path, "dataset=cifar100", missing_data, *MHGD)
    output = finish(sweep, sweep_dir(tmp_path), timeout_s=180)
    record_property("wall_time_s", round(time.monotonic() - started, 1))

    assert sweep.returncode != 0
    assert "not run, its prerequisite failed" in output
    assert "CIFAR-100 file not found" in output
    rows = accounting(job_ids(sweep_dir(tmp_path)))
    students = [row for row in rows if not is_build(row)]
    assert len(students) == 2
    assert {row["State"] for row in students} == {"CANCELLED"}  # never started
    assert list(find_runs(sweep_dir(tmp_path))) == []


def attempts(where: Path) -> dict[Path, int]:
    """How often each run below ``where`` started training (each start appends a line)."""
    return {run.path: len(run.read_attempts()) for run in find_runs(where)}


@pytest.mark.slow
@pytest.mark.slurm
def test_killed_launcher_rerun_reattaches_and_nothing_trains_twice(
    slurm_cluster: SlurmCluster, tmp_path: Path, record_property: pytest.RecordProperty
) -> None:
    """kill -9 of `mhgd-train -m` while its tasks train; the same command, run again, waits
    for the live jobs; a third run of it finds everything finished and submits nothing."""
    overrides = ("method=none", "seed=0,1")
    sweep = start_sweep(tmp_path, *overrides, epochs=4)
    wait_for_run(sweep, sweep_dir(tmp_path), trained(1), "trained an epoch")
    sweep.kill()  # SIGKILL: no cleanup, as when a login node drops the session
    sweep.communicate()
    submitted = job_ids(sweep_dir(tmp_path))

    rerun = start_sweep(tmp_path, *overrides, epochs=4)
    output = finish(rerun, sweep_dir(tmp_path))
    assert rerun.returncode == 0, output[-3000:]
    assert "0 submitted now" in output and "already queued or running" in output
    assert job_ids(sweep_dir(tmp_path)) == submitted
    counts = attempts(sweep_dir(tmp_path))
    assert len(counts) == 2 and set(counts.values()) == {1}, counts
    assert all(run.is_finished() for run in find_runs(sweep_dir(tmp_path)))

    started = time.monotonic()
    again = start_sweep(tmp_path, *overrides, epochs=4)
    output = finish(again, sweep_dir(tmp_path))
    record_property("finished_rerun_s", round(time.monotonic() - started, 1))
    assert again.returncode == 0, output[-3000:]
    assert "2 finished before, 0 already queued or running, 0 submitted now" in output
    assert job_ids(sweep_dir(tmp_path)) == submitted


@pytest.mark.slow
@pytest.mark.slurm
def test_fire_and_forget_then_collect(slurm_cluster: SlurmCluster, tmp_path: Path) -> None:
    overrides = ("method=none", "seed=0,1")
    leave = start_sweep(tmp_path, "hydra.launcher.wait=false", *overrides)
    output = finish(leave, sweep_dir(tmp_path), timeout_s=120)
    assert leave.returncode == 0, output[-3000:]
    assert "run the same command again" in output
    collect = start_sweep(tmp_path, *overrides)
    output = finish(collect, sweep_dir(tmp_path))
    assert collect.returncode == 0, output[-3000:]
    assert "0 submitted now" in output
    assert set(attempts(sweep_dir(tmp_path)).values()) == {1}


@pytest.mark.slow
@pytest.mark.slurm
def test_cancelled_build_cancels_only_its_dependents(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """Cancel the build of A = 4's MHAN: A = 2's student still trains; A = 4's is cancelled."""
    sweep = start_sweep(tmp_path, *MHGD)
    deadline = time.monotonic() + JOB_START_TIMEOUT_S
    while len(job_ids(sweep_dir(tmp_path))) < 4 and time.monotonic() < deadline:
        time.sleep(0.2)
    # Submitted in order: the teacher's build, the build of A = 4's MHAN after it, the runs.
    mhan_4 = sorted(job_ids(sweep_dir(tmp_path)), key=int)[1]
    subprocess.run(["scancel", mhan_4], check=True, timeout=30)
    output = finish(sweep, sweep_dir(tmp_path))

    assert sweep.returncode != 0
    assert "build of mhan-" in output and f"job {mhan_4} ended CANCELLED" in output
    assert "1 of 2 runs did not finish" in output
    students = {run.read_record().hparams["heads"]: run for run in find_runs(sweep_dir(tmp_path))}
    assert list(students) == [2] and students[2].is_finished()


@pytest.mark.slow
@pytest.mark.slurm
def test_runs_packed_two_per_job_match_unpacked_runs_and_resume_after_requeue(
    slurm_cluster: SlurmCluster, tmp_path: Path
) -> None:
    """A 2x2 grid, two runs per job: four records, the same metrics as one run per job, and a
    requeue of a packed job mid-training resumes both of its runs."""
    grid = ("method=none", "optim.weight_decay=0.0005,0.001", "seed=0,1")
    packed_opts = ("hydra.launcher.runs_per_gpu=2", "hydra.launcher.cpus_per_task=2")
    for base in ("packed", "unpacked"):
        (tmp_path / base).mkdir()
    packed = start_sweep(tmp_path / "packed", *grid, *packed_opts, epochs=4)
    unpacked = start_sweep(tmp_path / "unpacked", *grid, epochs=4)
    where = sweep_dir(tmp_path / "packed")
    wait_for_run(packed, where, trained(1), "trained an epoch")
    jobs = job_ids(where)
    assert len(jobs) == 2  # four runs in two jobs
    subprocess.run(["scontrol", "requeue", jobs[0]], check=True, timeout=30)
    for sweep, base in ((packed, tmp_path / "packed"), (unpacked, tmp_path / "unpacked")):
        output = finish(sweep, sweep_dir(base))
        assert sweep.returncode == 0, output[-3000:]

    def by_setting(base: Path) -> dict[tuple[float, int], RunDir]:
        return {
            (run.read_config()["optim"]["weight_decay"], run.read_record().seed): run
            for run in find_runs(sweep_dir(base))
        }

    packed_runs, unpacked_runs = by_setting(tmp_path / "packed"), by_setting(tmp_path / "unpacked")
    assert len(packed_runs) == 4 and packed_runs.keys() == unpacked_runs.keys()
    for setting, run in packed_runs.items():
        assert run.is_finished()
        assert scores(run.path) == scores(unpacked_runs[setting].path), setting
        assert run.read_record().extra["slurm_job_id"] in jobs
    resumed = [run for run in packed_runs.values() if len(run.read_attempts()) == 2]
    assert len(resumed) == 2  # both runs of the requeued job, each resumed once
    assert {run.read_record().extra["slurm_job_id"] for run in resumed} == {jobs[0]}
