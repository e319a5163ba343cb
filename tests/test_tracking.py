"""W&B as its users expect it, with the real wandb library in offline mode: readable names and
groups, the runtime in the config, the teacher -> MHAN -> student lineage as artifacts, best/last
summaries, system metrics; and a hanging server costs one short wait per job."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mhgd.pipeline import run
from mhgd.records import RunDir, RunRecord, find_runs
from mhgd.tracking import group_name, run_name
from tests.helpers import compose_config, tiny
from tests.wandb_files import offline_records


def kinds(records: list) -> list[str]:
    return [r.WhichOneof("record_type") for r in records]


def only(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def config_of(records: list) -> dict:
    items = only(records, "run")[0].config.update
    return {item.key: json.loads(item.value_json) for item in items}


def test_names_say_stage_hyper_parameters_and_seed() -> None:
    record = RunRecord(
        stage="student",
        role="main",
        cell_id="3fa2c1d4e5f6",
        seed=2,
        artifact_key="k",
        method="mhgd",
        dataset="cifar100",
        model="vgg7",
        teacher="vgg16",
        hparams={"heads": 4, "beta": 1.0, "mhan_epochs": 20},
    )
    assert run_name(record) == "student mhgd beta=1 heads=4 mhan_epochs=20 s2"
    assert group_name("table4-vgg-heads", record) == (
        "table4-vgg-heads/student vgg16->vgg7 mhgd beta=1 heads=4 mhan_epochs=20 [3fa2c1]"
    )


@pytest.fixture(scope="module")
def mhgd_offline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MHGD job (teacher, MHAN, student) logged to W&B offline."""
    tmp_path = tmp_path_factory.mktemp("wandb")
    overrides = tiny(tmp_path, "method=mhgd", "method.heads=2", "method.mhan.epochs=1")
    cfg = compose_config(*overrides, "logger.mode=offline", "name=lineage")
    run(cfg, tmp_path / "student")
    return tmp_path


def stage_runs(root: Path) -> dict[str, tuple[RunRecord, list]]:
    found = {}
    for run_dir in find_runs(root):
        record = run_dir.read_record()
        [records] = offline_records(run_dir.path)
        found[record.stage] = (record, records)
    return found


def test_every_stage_has_a_readable_name_group_and_full_config(mhgd_offline: Path) -> None:
    stages = stage_runs(mhgd_offline)
    assert set(stages) == {"teacher", "mhan", "student"}
    record, records = stages["student"]
    header = only(records, "run")[0]
    assert header.display_name == "student mhgd beta=1 heads=2 mhan_epochs=1 s0"
    assert header.run_group.startswith("lineage/student vgg16->vgg7 mhgd beta=1 heads=2")
    config = config_of(records)
    assert set(config["runtime"]) == {
        "device",
        "bf16",
        "channels_last",
        "compile",
        "threads",
        "runs_per_gpu",
    }
    assert config["job"]["method"]["heads"] == 2 and config["job"]["runtime"]["device"] == "cpu"
    assert config["run"]["hparams"] == {"heads": 2, "beta": 1.0, "mhan_epochs": 1}
    assert record.extra["wandb"]["mode"] == "offline"
    assert Path(record.extra["wandb"]["where"]).is_dir()
    assert only(stages["teacher"][1], "run")[0].display_name == "teacher vgg16 s0"


def test_checkpoints_are_artifacts_linking_teacher_mhan_and_student(mhgd_offline: Path) -> None:
    stages = stage_runs(mhgd_offline)
    logged = {}
    for stage, (record, records) in stages.items():
        outputs = [a for a in only(records, "artifact") if not a.use_after_commit]
        assert [a.name for a in outputs] == [f"{stage}-{record.artifact_key}"]
        [entry] = outputs[0].manifest.contents  # by reference: the file stays where it is
        assert entry.ref == (record_dir(mhgd_offline, record) / "checkpoint.pt").as_uri()
        logged[stage] = outputs[0].name
    inputs = {
        s: sorted(a.name for a in only(r, "artifact") if a.use_after_commit)
        for s, (_, r) in stages.items()
    }
    assert inputs == {
        "teacher": [],
        "mhan": [logged["teacher"]],
        "student": sorted([logged["teacher"], logged["mhan"]]),
    }


def record_dir(root: Path, record: RunRecord) -> Path:
    return next(d.path.resolve() for d in find_runs(root) if d.read_record() == record)


def test_best_and_last_summaries_and_system_metrics(mhgd_offline: Path) -> None:
    _, records = stage_runs(mhgd_offline)["student"]
    metrics = {m.name: m for m in only(records, "metric")}
    assert metrics["eval/top1"].summary.max and metrics["eval/top1"].summary.last
    assert metrics["eval/top1"].step_metric == "epoch"
    assert "stats" in kinds(records)  # system metrics are on by default


def test_system_metrics_can_be_switched_off(tmp_path: Path) -> None:
    cfg = compose_config(
        *tiny(tmp_path, "stage=teacher", epochs=1),
        "logger.mode=offline",
        "logger.system_metrics=false",
    )
    run(cfg, tmp_path / "teacher")
    [records] = offline_records(tmp_path / "teacher")
    assert "stats" not in kinds(records)


@pytest.fixture
def hanging_server() -> Iterator[str]:
    """A W&B server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def test_a_hanging_server_costs_one_short_wait_and_the_record_says_why(
    tmp_path: Path, hanging_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb

    import mhgd.tracking

    wandb.teardown()  # W&B keeps its settings per process: start from the environment below
    monkeypatch.setattr(mhgd.tracking, "_off_reason", None)
    monkeypatch.setenv("WANDB_BASE_URL", hanging_server)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    overrides = tiny(tmp_path, "method=mhgd", "method.heads=2", "method.mhan.epochs=1", epochs=1)
    cfg = compose_config(*overrides, "logger.mode=online", "logger.init_timeout_s=2")

    started = time.monotonic()
    result = run(cfg, tmp_path / "student")
    elapsed = time.monotonic() - started

    assert result is not None and result.status == "finished"
    statuses = [RunDir(d.path).read_record().extra["wandb"] for d in find_runs(tmp_path)]
    assert len(statuses) == 3  # teacher, MHAN, student: only the first waited
    assert all(s["mode"] == "off" and "wandb.init failed" in s["reason"] for s in statuses)
    assert elapsed < 60
    wandb.teardown()
