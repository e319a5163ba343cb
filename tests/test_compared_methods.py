"""The compared methods of Tables 1-3 (method.md section 9): losses on hand-worked cases, their
gradient combinations, and the init stage of FSP and AB.

Expected numbers are worked out in the comments or by a plain formula written in the test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from mhgd.engine.tasks import ClassifierTask
from mhgd.errors import ConfigError
from mhgd.methods import AB, FSP, KDSVD, KDSVDF, PreStage, SoftLogits, method_class
from mhgd.methods.ab import boundary_loss, connector
from mhgd.methods.fsp import flow_matrix, fsp_loss
from mhgd.methods.init_stage import InitTask
from mhgd.methods.kdsvd import kdsvd_loss, rbf_kernel
from mhgd.methods.kdsvdf import kdsvdf_loss
from mhgd.methods.soft_logits import soft_logits_loss
from mhgd.models import SensedModel, build_model
from tests.helpers import compose_config

NAMES = {"soft_logits": SoftLogits, "fsp": FSP, "ab": AB, "kdsvd": KDSVD, "kdsvdf": KDSVDF}


def method_cfg(name: str, *overrides: str, **changes):
    cfg = compose_config(f"method={name}", *overrides).method
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def pair(width: float = 0.125) -> tuple[SensedModel, SensedModel]:
    torch.manual_seed(0)
    teacher = build_model("vgg16", num_classes=10, image_size=32, width=width, batch_norm=True)
    student = build_model("vgg7", num_classes=10, image_size=32, width=width, batch_norm=True)
    teacher.eval().requires_grad_(False)
    return teacher, student


def batch(n: int = 8) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 32, 32, generator=generator) - 0.5, torch.arange(n) % 10


# -- registry and configs ---------------------------------------------------------------------
def test_every_method_is_registered_and_described_with_the_papers_settings() -> None:
    for name, cls in NAMES.items():
        assert method_class(name) is cls and cls.requires_teacher
    assert SoftLogits.describe(method_cfg("soft_logits")) == {
        "tau": 4.0,
        "weight": 0.3,
        "ce_weight": 0.7,
    }
    assert FSP.describe(method_cfg("fsp")) == {"weight": 1e-3, "init_epochs": 40}
    assert AB.describe(method_cfg("ab")) == {"weight": 3e-3, "margin": 1.0, "init_epochs": 40}
    for name in ("kdsvd", "kdsvdf"):
        described = NAMES[name].describe(method_cfg(name))
        assert described == {"beta": 1.0, "weight": 1.0, "clip": True}


def test_only_fsp_and_ab_have_an_init_stage_at_the_students_learning_rate() -> None:
    for name in ("soft_logits", "kdsvd", "kdsvdf"):
        assert NAMES[name].pre_stages(method_cfg(name)) == []
    for name in ("fsp", "ab"):
        (vgg,) = NAMES[name].pre_stages(method_cfg(name))
        (wrn,) = NAMES[name].pre_stages(method_cfg(name, "schedule=wrn"))
        assert (vgg.name, vgg.shared, vgg.epochs, vgg.milestones) == ("init", False, 40, ())
        assert (vgg.lr, wrn.lr) == (0.01, 0.1)  # schedule.lr, held constant
        (short,) = NAMES[name].pre_stages(method_cfg(name, **{"init.epochs": 1}))
        assert short.epochs == 1


@pytest.mark.parametrize("name", ["fsp", "ab"])
def test_an_init_stage_without_epochs_is_a_config_error(name: str) -> None:
    teacher, student = pair()
    with pytest.raises(ConfigError, match=r"method.init.epochs.*method=none"):
        NAMES[name].check_pair(
            method_cfg(name, **{"init.epochs": 0}), teacher.sensing, student.sensing
        )


def test_pairs_are_checked_before_any_compute() -> None:
    wrn = build_model("wrn22_4", num_classes=10, image_size=32, width=0.25)
    resnet = build_model("resnet", num_classes=10, image_size=32, width=0.125)
    vgg = build_model("vgg7", num_classes=10, image_size=32, width=0.25)
    for name in ("fsp", "kdsvd", "kdsvdf"):  # they compare channels one to one
        with pytest.raises(ConfigError, match="channels"):
            NAMES[name].check_pair(method_cfg(name), wrn.sensing, resnet.sensing)
    AB.check_pair(method_cfg("ab"), wrn.sensing, resnet.sensing)  # connectors map channels
    with pytest.raises(ConfigError, match=r"sizes \[32, 16, 8\].*\[16, 8, 4, 4, 2\]"):
        AB.check_pair(method_cfg("ab"), wrn.sensing, vgg.sensing)
    SoftLogits.check_pair(method_cfg("soft_logits"), wrn.sensing, vgg.sensing)  # logits only
    with pytest.raises(ConfigError, match="tau"):
        SoftLogits.check_pair(method_cfg("soft_logits", tau=0), wrn.sensing, vgg.sensing)


# -- Soft-logits -------------------------------------------------------------------------------
def test_soft_logits_loss_on_a_hand_case() -> None:
    # Sample 0: teacher logits (4 ln 3, 0) / 4 -> p_T = (3/4, 1/4); student (0, 0) -> (1/2, 1/2).
    # KL = 3/4 ln(3/2) + 1/4 ln(1/2). Sample 1: equal logits, KL = 0. Batch mean: half of it.
    teacher = torch.tensor([[4 * math.log(3), 0.0], [1.0, 2.0]])
    student = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    expected = (0.75 * math.log(1.5) + 0.25 * math.log(0.5)) / 2
    assert soft_logits_loss(student, teacher, tau=4.0).item() == pytest.approx(expected, rel=1e-6)


def test_soft_logits_gradient_is_the_weighted_sum_without_tau_squared() -> None:
    torch.manual_seed(0)
    weights = nn.Parameter(torch.randn(3, 4))
    inputs, labels = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
    teacher_logits = torch.randn(5, 4)
    method = SoftLogits(
        None,
        build_model("vgg7", num_classes=4, image_size=32, width=0.125),
        method_cfg("soft_logits"),
    )
    logits = inputs @ weights
    ce = F.cross_entropy(logits, labels)
    terms = method.loss_terms((logits, []), (teacher_logits, []), labels)
    method.backward(ce, terms, [weights], epoch=0)
    # Independently: 0.7 CE + 0.3 sum_c p_T (log p_T - log p_S), both at tau = 4, batch mean.
    p_teacher = torch.softmax(teacher_logits / 4, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(inputs @ weights / 4, dim=1))).sum(1)
    reference = 0.7 * F.cross_entropy(inputs @ weights, labels) + 0.3 * kl.mean()
    (expected,) = torch.autograd.grad(reference, [weights])
    torch.testing.assert_close(weights.grad, expected)
    assert terms["kd"].item() == pytest.approx(0.3 * kl.mean().item(), rel=1e-5)


# -- FSP ---------------------------------------------------------------------------------------
def test_flow_matrix_max_pools_the_larger_map_and_divides_by_positions() -> None:
    front = torch.arange(16.0).reshape(1, 1, 4, 4)  # 2x2 max pool -> [[5, 7], [13, 15]]
    back = torch.stack([torch.ones(2, 2), torch.eye(2)]).unsqueeze(0)  # (1, 2, 2, 2)
    # G[0, 0] = (5 + 7 + 13 + 15) / 4 = 10; G[0, 1] = (5 + 15) / 4 = 5.
    torch.testing.assert_close(flow_matrix(front, back), torch.tensor([[[10.0, 5.0]]]))
    # The larger map is pooled whichever side it is on: G^T of the swapped pair.
    torch.testing.assert_close(flow_matrix(back, front), torch.tensor([[[10.0], [5.0]]]))
    same = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)
    # (1 + 4 + 9 + 16) / 4 = 7.5: divided by HW, no pooling.
    torch.testing.assert_close(flow_matrix(same, same), torch.tensor([[[7.5]]]))
    with pytest.raises(ValueError, match="multiples"):
        flow_matrix(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 2, 2))


def test_fsp_loss_on_a_hand_case() -> None:
    # Three points of 1 channel, 1x1: the flow of a module is the product front * back.
    # Sample 0: student flows (1*2, 2*3) = (2, 6), teacher (1*1, 1*3) = (1, 3):
    # ((1)^2 + (3)^2) / 2 = 5. Sample 1: student (0, 0), teacher (2*2, 2*1) = (4, 2): 20 / 2 = 10.
    def maps(*values: list[float]) -> list[Tensor]:
        return [torch.tensor(v).reshape(2, 1, 1, 1) for v in values]

    student = maps([1.0, 0.0], [2.0, 0.0], [3.0, 0.0])
    teacher = maps([1.0, 2.0], [1.0, 2.0], [3.0, 1.0])
    assert fsp_loss(student, teacher).item() == pytest.approx((5 + 10) / 2)


def test_fsp_method_weights_its_loss_and_never_differentiates_the_teacher() -> None:
    teacher, student = pair()
    method = FSP(teacher, student, method_cfg("fsp"))
    images, _ = batch()
    s_maps = student(images)[1]
    t_maps = [m.detach().requires_grad_(True) for m in teacher(images)[1]]
    loss = method.distillation_loss(s_maps, t_maps)
    assert loss.item() == pytest.approx(1e-3 * fsp_loss(s_maps, t_maps).item(), rel=1e-6)
    loss.backward()
    assert all(m.grad is None for m in t_maps)
    assert student.stages[0][0][0].weight.grad is not None


# -- AB ----------------------------------------------------------------------------------------
def test_boundary_loss_on_a_hand_case() -> None:
    source = torch.tensor([0.5, 2.0, -0.5, -2.0, 0.3, 1.0, -1.0]).reshape(1, 7, 1, 1)
    target = torch.tensor([0.7, 0.1, 0.0, 0.0, 0.0, 3.0, 0.0]).reshape(1, 7, 1, 1)
    # Active teacher (t > 0), s <= 1: (s - 1)^2 -> 0.25, 0 (s = 2 is past the margin), 0 (s = 1).
    # Inactive teacher, s > -1: (s + 1)^2 -> 0.25, 0 (s = -2), 1.69 (s = 0.3), 0 (s = -1).
    assert boundary_loss(source, target, margin=1.0).item() == pytest.approx(2.19)
    # A second sample with no loss halves the batch mean; margin 2 moves both boundaries.
    past = torch.where(target > 0, 5.0, -5.0)  # beyond the margin on the teacher's side
    two = boundary_loss(torch.cat([source, past]), torch.cat([target, target]), 1.0)
    assert two.item() == pytest.approx(2.19 / 2)
    # Margin 2: (0.5-2)^2 + (2-2)^2 + (1-2)^2 active; (-0.5+2)^2 + 0 + (2.3)^2 + (1)^2 inactive.
    expected = 2.25 + 0 + 1 + 2.25 + 0 + 5.29 + 1
    assert boundary_loss(source, target, margin=2.0).item() == pytest.approx(expected)


def test_connector_is_a_1x1_conv_without_bias_then_batch_norm_without_activation() -> None:
    block = connector(8, 16)
    conv, norm = block
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
    assert (conv.in_channels, conv.out_channels) == (8, 16)
    assert isinstance(norm, nn.BatchNorm2d) and len(block) == 2
    assert (block(torch.randn(4, 8, 3, 3)) < 0).any()  # no ReLU: negative outputs remain


def test_ab_weights_deeper_points_by_powers_of_two() -> None:
    teacher, student = pair()
    method = AB(teacher, student, method_cfg("ab", margin=0.5))
    # All-zero student maps make every connector output 0 (batch norm of zeros is 0), and all
    # positive teacher maps make each element cost (0 - 0.5)^2 = 0.25.
    s_maps = [torch.zeros(2, p.channels, p.size, p.size) for p in student.sensing]
    t_maps = [torch.ones(2, p.channels, p.size, p.size) for p in teacher.sensing]
    expected = 3e-3 * sum(
        2**i * 0.25 * p.channels * p.size**2 for i, p in enumerate(teacher.sensing)
    )
    assert method.distillation_loss(s_maps, t_maps).item() == pytest.approx(expected, rel=1e-6)


def test_ab_connectors_map_student_channels_to_the_teachers() -> None:
    teacher = build_model("wrn22_4", num_classes=10, image_size=32, width=0.25)
    student = build_model("resnet", num_classes=10, image_size=32, width=0.125)
    method = AB(teacher.eval(), student, method_cfg("ab"))
    shapes = [(link[0].in_channels, link[0].out_channels) for link in method.connectors]
    assert shapes == [(8, 16), (16, 32), (32, 64)]


# -- KD-SVD and KD-SVDF ------------------------------------------------------------------------
def test_rbf_kernel_relates_every_back_and_front_channel() -> None:
    back, front = torch.tensor([[1.0, -1.0]]), torch.tensor([[0.0, 3.0]])
    # K[b, f] = exp(-(back_b - front_f)^2 / 8)
    expected = torch.tensor(
        [[[math.exp(-1 / 8), math.exp(-4 / 8)], [math.exp(-1 / 8), math.exp(-16 / 8)]]]
    )
    torch.testing.assert_close(rbf_kernel(back, front), expected)


def test_kdsvd_loss_sums_squared_kernel_differences_over_modules() -> None:
    # Points of 1 channel, 2 samples. Teacher vectors all 0: every kernel entry is 1.
    # Student: module 1 sample 0 differs by 2 -> exp(-1/2); module 2 sample 1 differs by 1 ->
    # exp(-1/8); the rest are 1. Loss = (exp(-1/2) - 1)^2 + (exp(-1/8) - 1)^2.
    student = [
        torch.tensor([[0.0], [0.0]]),
        torch.tensor([[2.0], [0.0]]),
        torch.tensor([[2.0], [1.0]]),
    ]
    teacher = [torch.zeros(2, 1)] * 3
    expected = (math.exp(-0.5) - 1) ** 2 + (math.exp(-1 / 8) - 1) ** 2
    assert kdsvd_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_kdsvdf_loss_is_the_summed_squared_difference_of_vectors() -> None:
    student = [torch.tensor([[0.6, 0.8]]), torch.tensor([[1.0, 0.0]])]
    teacher = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    # (0.6 - 1)^2 + 0.8^2 = 0.8 at the first point, 1 + 1 = 2 at the second.
    assert kdsvdf_loss(student, teacher).item() == pytest.approx(2.8)


def rank_one_maps(direction: list[float]) -> Tensor:
    """One sample whose 2x2 map holds direction * a[h, w]: its top right singular vector is the
    normalised direction (up to sign)."""
    unit = torch.tensor(direction) / torch.tensor(direction).norm()
    spatial = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    return (unit[:, None, None] * spatial).unsqueeze(0)


@pytest.mark.parametrize("name", ["kdsvd", "kdsvdf"])
def test_vectors_come_from_the_maps_aligned_to_the_teacher(name: str) -> None:
    teacher, student = pair()
    method = NAMES[name](teacher, student, method_cfg(name))
    # Teacher directions, unit, with non-negative sums (the "sum" sign rule keeps them).
    t_dirs = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]
    # Student directions. The second has cosine -0.8 with the teacher's (0.6, 0.8), so it is
    # flipped to (0, 1); the others already have positive cosines.
    s_dirs = [[0.8, 0.6], [0.0, -1.0], [1.0, 0.0]]
    aligned = [[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]]
    logits = torch.zeros(1, 10)
    terms = method.loss_terms(
        (logits, [rank_one_maps(d) for d in s_dirs]),
        (logits, [rank_one_maps(d) for d in t_dirs]),
        torch.tensor([0]),
    )
    if name == "kdsvdf":
        expected = sum(
            (s - t) ** 2
            for sd, td in zip(aligned, t_dirs, strict=True)
            for s, t in zip(sd, td, strict=True)
        )
    else:
        expected = 0.0
        for m in range(2):  # modules (front m, back m + 1); kernel over (back b, front f)
            for b in range(2):
                for f in range(2):
                    k_s = math.exp(-((aligned[m + 1][b] - aligned[m][f]) ** 2) / 8)
                    k_t = math.exp(-((t_dirs[m + 1][b] - t_dirs[m][f]) ** 2) / 8)
                    expected += (k_s - k_t) ** 2
    assert terms["transfer"].item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def clipped_reference(ce: Tensor, transfer: Tensor, params, bound_factor: float) -> list[Tensor]:
    """g_CE + g_T * min(1, bound_factor * ||g_CE|| / ||g_T||) per tensor, written out."""
    g_ce = torch.autograd.grad(ce, params, retain_graph=True)
    g_t = torch.autograd.grad(transfer, params, retain_graph=True, allow_unused=True)
    expected = []
    for gc, gt in zip(g_ce, g_t, strict=True):
        if gt is None:
            expected.append(gc)
            continue
        scale = min(1.0, bound_factor * gc.norm().item() / max(gt.norm().item(), 1e-30))
        expected.append(gc + gt * scale)
    return expected


@pytest.mark.parametrize("name", ["kdsvd", "kdsvdf"])
@pytest.mark.parametrize("beta", [1.0, 1e-3])
def test_singular_vector_methods_clip_their_gradient_per_tensor(name: str, beta: float) -> None:
    teacher, student = pair()
    method = NAMES[name](teacher, student, method_cfg(name, beta=beta, weight=50.0))
    images, labels = batch()
    out = student(images)
    ce = F.cross_entropy(out[0], labels)
    terms = method.loss_terms(out, teacher(images), labels)
    params = list(student.parameters())
    epoch = 2
    expected = clipped_reference(ce, terms["transfer"], params, beta / (1 + math.exp(-epoch)))
    stats = method.backward(ce, terms, params, epoch)
    for param, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-7)
    assert stats["zeroed_svd_grads"] == 0.0
    assert 0.0 < stats["transfer_clipped_fraction"] <= 1.0


def test_without_clipping_the_gradients_are_added() -> None:
    teacher, student = pair()
    method = KDSVDF(teacher, student, method_cfg("kdsvdf", clip=False))
    images, labels = batch()
    out = student(images)
    ce = F.cross_entropy(out[0], labels)
    terms = method.loss_terms(out, teacher(images), labels)
    params = list(student.parameters())
    expected = torch.autograd.grad(ce + terms["transfer"], params, retain_graph=True)
    method.backward(ce, terms, params, epoch=0)
    for param, grad in zip(params, expected, strict=True):
        torch.testing.assert_close(param.grad, grad)


# -- the init stage of FSP and AB --------------------------------------------------------------
def init_stage(method) -> PreStage:
    (stage,) = type(method).pre_stages(method.cfg)
    return stage


@pytest.mark.parametrize("name", ["fsp", "ab"])
def test_init_stage_trains_on_the_distillation_loss_alone(name: str) -> None:
    teacher, student = pair()
    method = NAMES[name](teacher, student, method_cfg(name))
    task = method.pre_stage_task(init_stage(method))
    assert isinstance(task, InitTask)
    assert task.trainable_parameters() == [*student.parameters(), *method.parameters()]
    task.train_mode()
    assert student.training and not teacher.training
    images, labels = batch()
    stats = task.train_step(images, labels, epoch=0)
    loss = method.distillation_loss(student(images)[1], teacher(images)[1])
    assert stats == {"distill": pytest.approx(loss.item(), rel=1e-5)}
    # No cross-entropy: the gradients are the distillation loss's alone.
    reached = [*student.stages.parameters(), *method.parameters()]
    for param, grad in zip(reached, torch.autograd.grad(loss, reached), strict=True):
        torch.testing.assert_close(param.grad, grad)
    # Only what the loss reaches gets a gradient: the classifier after the last sensing point
    # gets none, so the optimiser leaves it (and its weight decay) alone, as the authors do.
    assert all(p.grad is not None for p in student.stages.parameters())
    assert all(p.grad is None for p in student.classifier.parameters())
    assert all(p.grad is not None for p in method.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    row = task.evaluate([batch(4), batch(6)])
    assert row["neg_distill"] == -row["distill"] and 0 <= row["top1"] <= 100
    assert task.score_name == "neg_distill"


@pytest.mark.parametrize("name", ["fsp", "ab"])
def test_main_stage_after_init_is_cross_entropy_alone(name: str) -> None:
    teacher, student = pair()
    method = NAMES[name](teacher, student, method_cfg(name))
    stage = init_stage(method)
    task = method.pre_stage_task(stage)
    task.train_mode()
    images, labels = batch()
    task.train_step(images, labels, epoch=0)
    with torch.no_grad():  # a visible change to carry over
        for param in [*student.parameters(), *method.parameters()]:
            param.add_(0.01)
    # A fresh student and method take over the trained state, as a resumed pipeline does.
    _, fresh_student = pair()
    fresh = NAMES[name](teacher, fresh_student, method_cfg(name))
    fresh.load_pre_stage(stage, task.state_dict())
    for key, value in student.state_dict().items():
        assert torch.equal(fresh_student.state_dict()[key], value), key
    for key, value in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    main = ClassifierTask(fresh_student, fresh, teacher)
    assert main.trainable_parameters() == list(fresh_student.parameters())  # connectors frozen
    main.train_mode()
    fresh_student.zero_grad()
    stats = main.train_step(images, labels, epoch=0)
    assert set(stats) == {"ce", "top1"}
    reference = F.cross_entropy(fresh_student(images)[0], labels)
    expected = torch.autograd.grad(reference, list(fresh_student.parameters()))
    for param, grad in zip(fresh_student.parameters(), expected, strict=True):
        torch.testing.assert_close(param.grad, grad)
