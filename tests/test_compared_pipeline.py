"""The compared methods end to end on the digits data: stages, records, CE-only main stages."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mhgd.pipeline import run
from mhgd.records import RunDir, find_runs
from tests.helpers import compose_config, tiny

pytestmark = pytest.mark.slow

METHODS = ("soft_logits", "fsp", "ab", "kdsvd", "kdsvdf")
INIT_TYPE = ("fsp", "ab")


def train(root: Path, name: str) -> Path:
    """One student of ``name`` (one epoch; FSP and AB after a one-epoch init stage)."""
    shortened = ["method.init.epochs=1"] if name in INIT_TYPE else []
    run_dir = root / "outputs" / name
    run(compose_config(*tiny(root, f"method={name}", *shortened, epochs=1)), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All five students, sharing one cached teacher."""
    tmp = tmp_path_factory.mktemp("compared")
    for name in METHODS:
        train(tmp, name)
    return tmp


def test_all_students_learn_from_one_cached_teacher(root: Path) -> None:
    (teacher,) = find_runs(root / "store")
    assert teacher.read_record().stage == "teacher" and teacher.is_finished()
    for name in METHODS:
        student = RunDir(root / "outputs" / name)
        record = student.read_record()
        assert (record.stage, record.role, record.method) == ("student", "main", name)
        assert record.teacher == "vgg16" and record.artifacts["teacher"] == str(teacher.path)
        assert student.is_finished() and student.read_result().score_name == "top1"


@pytest.mark.parametrize("name", INIT_TYPE)
def test_init_stage_has_its_own_finished_record_inside_the_student_run(
    root: Path, name: str
) -> None:
    student = RunDir(root / "outputs" / name)
    init = RunDir(student.path / "init")
    record = init.read_record()
    assert (record.stage, record.role, record.method, record.teacher) == (
        "init",
        "artifact",
        name,
        "vgg16",
    )
    assert init.is_finished() and init.read_result().score_name == "neg_distill"
    assert student.read_record().artifacts["init"] == str(init.path)
    (row,) = init.read_metrics()
    assert row["train/distill"] > 0 and row["score"] == -row["eval/distill"]


@pytest.mark.parametrize("name", INIT_TYPE)
def test_init_type_main_stage_trains_on_cross_entropy_alone(root: Path, name: str) -> None:
    (row,) = RunDir(root / "outputs" / name).read_metrics()
    assert {key for key in row if key.startswith("train/")} == {"train/ce", "train/top1"}


@pytest.mark.parametrize(
    ("name", "term"), [("soft_logits", "kd"), ("kdsvd", "transfer"), ("kdsvdf", "transfer")]
)
def test_multi_task_methods_log_their_distillation_term(root: Path, name: str, term: str) -> None:
    (row,) = RunDir(root / "outputs" / name).read_metrics()
    assert row[f"train/{term}"] > 0
    if term == "transfer":  # the clipped gradient combination of MHGD
        assert 0 <= row["train/transfer_clipped_fraction"] <= 1


def test_a_finished_init_stage_is_reused_and_starts_the_main_stage(root: Path) -> None:
    student = RunDir(root / "outputs" / "fsp")
    init_checkpoint = student.path / "init" / "checkpoint.pt"
    stamp = init_checkpoint.stat().st_mtime_ns
    (before,) = student.read_metrics()
    for file in ("checkpoint.pt", "result.json", "metrics.jsonl"):
        (student.path / file).unlink()
    train(root, "fsp")
    assert init_checkpoint.stat().st_mtime_ns == stamp
    (after,) = student.read_metrics()
    # Same initialised weights, same data order: the same epoch, to the last bit.
    assert {k: v for k, v in after.items() if k != "time_s"} == {
        k: v for k, v in before.items() if k != "time_s"
    }


def test_the_report_fills_table1_from_these_runs(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mhgd.report.cli import main as report

    argv = ["table1", str(root / "outputs"), "--dataset", "digits", "--out", str(tmp_path)]
    assert report(argv) == 0
    assert "digits demo, not the paper's setting" in capsys.readouterr().out
    with open(tmp_path / "table1.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for name in METHODS:
        (row,) = [r for r in rows if r["row"] == "VGG16 -> VGG7" and r["method"] == name]
        result = RunDir(root / "outputs" / name).read_result()
        assert float(row["last_mean"]) == pytest.approx(result.last_score)
        assert row["n_seeds"] == "1" and "1 of 5 seeds" in row["flags"]
