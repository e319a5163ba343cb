"""The transfer as a metric (held-out graph KL through frozen MHAN heads) and the MHAN's own
weight decay."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mhgd.data import Batches, load_dataset
from mhgd.engine.tasks import ClassifierTask
from mhgd.errors import ConfigError
from mhgd.methods import Distiller, method_class
from mhgd.methods.mhgd import MHGD, GraphProbe, graph_kl_per_row, transfer_loss
from mhgd.models import build_model
from mhgd.pipeline import run
from mhgd.records import RunDir
from mhgd.stage_run import _loop_settings
from mhgd.stages import pre_stage_spec
from tests.helpers import compose_config, tiny


def _pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    options = {"num_classes": 10, "image_size": 32, "width": 0.125, "batch_norm": True}
    return build_model("vgg16", **options).eval(), build_model("vgg7", **options)


def _mhgd(teacher, student, heads: int = 2) -> MHGD:
    cfg = compose_config("method=mhgd", f"method.heads={heads}").method
    return MHGD(teacher, student, cfg)


def test_graph_kl_per_row_is_the_transfer_loss_over_heads_and_rows() -> None:
    student, teacher = torch.randn(3, 5, 5), torch.randn(3, 5, 5)
    assert graph_kl_per_row(student, teacher) == pytest.approx(
        transfer_loss(student, teacher).item() / 15
    )


def test_the_probe_reads_zero_for_the_teacher_itself_and_more_for_a_student() -> None:
    teacher, student = _pair()
    method = _mhgd(teacher, student)
    probe = method.eval_probe()
    images = torch.rand(16, 3, 32, 32) - 0.5
    itself = GraphProbe(teacher, method.heads, "sum", 1)
    assert itself(teacher(images), images)["graph_kl"].item() == pytest.approx(0.0, abs=1e-5)
    assert probe(student(images), images)["graph_kl"].item() > 1e-4


def test_evaluation_logs_the_graph_kl_only_where_there_are_heads(tmp_path: Path) -> None:
    teacher, student = _pair()
    _, test, _ = load_dataset("digits", tmp_path)
    batches = Batches(test, 60, device="cpu")
    distilled = ClassifierTask(student, _mhgd(teacher, student), teacher).evaluate(batches)
    assert distilled["graph_kl"] > 0
    alone = ClassifierTask(student, Distiller(None, student, None)).evaluate(batches)
    assert "graph_kl" not in alone
    probed = ClassifierTask(
        student, Distiller(None, student, None), probe=_mhgd(teacher, student).eval_probe()
    ).evaluate(batches)
    assert probed["graph_kl"] > 0 and probed["top1"] == alone["top1"]
    none_heads = _mhgd(teacher, student, heads=0)
    assert none_heads.eval_probe() is None


def test_the_mhan_trains_with_its_own_weight_decay() -> None:
    cfg = compose_config("method=mhgd")
    stage = method_class("mhgd").pre_stages(cfg.method)[0]
    spec = pre_stage_spec(cfg, stage, None, None)
    assert stage.weight_decay == spec.weight_decay == 1e-3  # the authors' 5e-4 * sum(w^2)
    assert spec.identity["weight_decay"] == 1e-3
    assert _loop_settings(cfg, spec.weight_decay).weight_decay == 1e-3
    assert _loop_settings(cfg).weight_decay == 5e-4  # the student's, optim.weight_decay
    other = compose_config("method=mhgd", "method.mhan.weight_decay=5e-4")
    stage = method_class("mhgd").pre_stages(other.method)[0]
    assert pre_stage_spec(other, stage, None, None).key != spec.key


@pytest.mark.slow
def test_any_student_can_be_probed_through_a_cached_mhan(tmp_path: Path) -> None:
    """An MHGD run's MHAN measures a student alone; an MHAN of another teacher is refused."""
    settings = tiny(tmp_path, "method=mhgd", "method.heads=2", "method.mhan.epochs=1")
    run(compose_config(*settings), tmp_path / "mhgd")
    assert "eval/graph_kl" in RunDir(tmp_path / "mhgd").read_metrics()[-1]
    alone = [*settings, "method.heads=0", f"probe_mhan={tmp_path / 'mhgd'}"]
    run(compose_config(*alone), tmp_path / "alone")
    assert all(row["eval/graph_kl"] > 0 for row in RunDir(tmp_path / "alone").read_metrics())
    mhan = RunDir(tmp_path / "mhgd").read_record().artifacts["mhan"]
    assert RunDir(tmp_path / "alone").read_record().artifacts["probe_mhan"] == mhan
    with pytest.raises(ConfigError, match="another teacher"):
        run(compose_config(*alone, "teacher_seed=1", "seed=1"), tmp_path / "wrong")
