"""MHGD behind the method contract: what is frozen, what is trained, what A = 0 means."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mhgd.engine.tasks import ClassifierTask
from mhgd.errors import ConfigError
from mhgd.methods import MHGD, method_class
from mhgd.methods.mhgd import MhanTask, module_widths
from mhgd.models import build_model
from tests.helpers import compose_config


def mhgd_cfg(**changes):
    cfg = compose_config("method=mhgd").method
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def pair(width: float = 0.125):
    torch.manual_seed(0)
    teacher = build_model("vgg16", num_classes=10, image_size=32, width=width, batch_norm=True)
    student = build_model("vgg7", num_classes=10, image_size=32, width=width, batch_norm=True)
    teacher.eval().requires_grad_(False)
    return teacher, student


def test_registered_and_described() -> None:
    assert method_class("mhgd") is MHGD
    assert MHGD.describe(mhgd_cfg()) == {"heads": 8, "mhan_epochs": 20, "beta": 1.0}


def test_modules_are_consecutive_sensing_points() -> None:
    teacher, _ = pair()
    assert module_widths(teacher.sensing) == [(8, 16), (16, 32), (32, 64), (64, 64)]


def test_zero_heads_is_the_student_alone() -> None:
    cfg = mhgd_cfg(heads=0)
    assert not MHGD.needs_teacher(cfg)
    assert MHGD.pre_stages(cfg) == []
    _, student = pair()
    method = MHGD(None, student, cfg)
    assert len(method.heads) == 0 and list(method.parameters()) == []


def test_mhan_pre_stage_is_shared_and_turns_drop_head_off_for_one_head() -> None:
    (stage,) = MHGD.pre_stages(mhgd_cfg())
    assert (stage.name, stage.shared, stage.epochs, stage.lr) == ("mhan", True, 20, 0.1)
    assert stage.config["drop_head"] is True
    (single,) = MHGD.pre_stages(mhgd_cfg(heads=1))
    assert single.config["drop_head"] is False


def test_channel_mismatch_is_refused_unless_the_adapter_is_on() -> None:
    teacher = build_model("wrn22_4", num_classes=10, image_size=32, width=0.25)
    student = build_model("resnet", num_classes=10, image_size=32, width=0.125)
    with pytest.raises(ConfigError, match=r"channels.*method\.adapter=true"):
        MHGD.check_pair(mhgd_cfg(), teacher.sensing, student.sensing)
    MHGD.check_pair(mhgd_cfg(adapter=True), teacher.sensing, student.sensing)
    vgg = build_model("vgg7", num_classes=10, image_size=32, width=0.25)
    with pytest.raises(ConfigError, match="one to one"):
        MHGD.check_pair(mhgd_cfg(adapter=True), teacher.sensing, vgg.sensing)


def batch(n: int = 16):
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=generator) - 0.5, torch.arange(n) % 10


def test_mhan_stage_trains_heads_and_moves_their_statistics() -> None:
    teacher, student = pair()
    method = MHGD(teacher, student, mhgd_cfg(heads=2))
    (stage,) = MHGD.pre_stages(method.cfg)
    task = MhanTask(teacher, method.heads, drop_head=True, sign="sum")
    task.train_mode()
    before = {k: v.clone() for k, v in method.heads.state_dict().items()}
    images, labels = batch()
    stats = task.train_step(images, labels, epoch=0)
    assert set(stats) == {"loss", "cos_m1", "cos_m2", "cos_m3", "cos_m4"}
    heads_grads = [p.grad for p in method.heads.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in heads_grads)
    assert all(p.grad is None for p in teacher.parameters())
    assert not torch.equal(before["0.key.1.running_mean"], method.heads[0].key[1].running_mean)
    assert stage.name == "mhan"


def test_student_stage_keeps_heads_frozen_in_eval_mode() -> None:
    teacher, student = pair()
    method = MHGD(teacher, student, mhgd_cfg(heads=2))
    (stage,) = MHGD.pre_stages(method.cfg)
    mhan = method.pre_stage_task(stage)
    method.load_pre_stage(stage, mhan.state_dict())
    frozen = {k: v.clone() for k, v in method.heads.state_dict().items()}
    task = ClassifierTask(student, method, teacher)
    assert task.trainable_parameters() == list(student.parameters())
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.1, momentum=0.9)
    for epoch in range(2):
        task.train_mode()
        assert not method.heads.training and not teacher.training and student.training
        images, labels = batch()
        optimizer.zero_grad()
        stats = task.train_step(images, labels, epoch)
        optimizer.step()
        assert stats["transfer"] > 0 and "transfer_clipped_fraction" in stats
    for key, value in method.heads.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert all(p.grad is None for p in method.heads.parameters())


def test_transfer_gradient_reaches_the_student_features_only() -> None:
    teacher, student = pair()
    method = MHGD(teacher, student, mhgd_cfg(heads=2, beta=1e6))
    (stage,) = MHGD.pre_stages(method.cfg)
    method.load_pre_stage(stage, method.pre_stage_task(stage).state_dict())
    task = ClassifierTask(student, method, teacher)
    task.train_mode()
    images, labels = batch()
    task.train_step(images, labels, epoch=0)
    with_transfer = [p.grad.clone() for p in student.parameters()]
    method.beta = 0.0
    task.train_step(images, labels, epoch=0)
    ce_only = [p.grad for p in student.parameters()]
    classifier = {id(p) for p in student.classifier.parameters()}
    for param, a, b in zip(student.parameters(), with_transfer, ce_only, strict=True):
        if id(param) in classifier:
            assert torch.equal(a, b)  # after the last sensing point: no transfer gradient
    assert any(not torch.equal(a, b) for a, b in zip(with_transfer, ce_only, strict=True))


def test_student_stage_logits_are_the_loaded_heads_ones() -> None:
    teacher, student = pair()
    method = MHGD(teacher, student, mhgd_cfg(heads=2))
    (stage,) = MHGD.pre_stages(method.cfg)
    mhan = method.pre_stage_task(stage)
    mhan.train_mode()
    images, labels = batch()
    mhan.train_step(images, labels, epoch=0)  # statistics and weights off their initial values
    method.load_pre_stage(stage, mhan.state_dict())
    method.train()

    def transfer() -> torch.Tensor:
        with torch.no_grad():
            return method.loss_terms(student(images), teacher(images), labels)["transfer"]

    def through_the_heads() -> torch.Tensor:
        method.heads.requires_grad_(True)  # learning heads are applied as themselves
        try:
            return transfer()
        finally:
            method.heads.requires_grad_(False)

    torch.testing.assert_close(transfer(), through_the_heads())
    # Other heads loaded (a resumed checkpoint): the frozen forms are rebuilt from them.
    mhan.train_mode()
    mhan.train_step(images, labels, epoch=1)
    method.load_state_dict(
        {**method.state_dict(), **{f"heads.{k}": v for k, v in mhan.heads.state_dict().items()}}
    )
    method.train()
    torch.testing.assert_close(transfer(), through_the_heads())
