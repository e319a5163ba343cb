"""MHGD's heads, estimator, losses and gradient clipping (method.md sections 3-5).

Expected numbers are worked out by hand in the comments (or by a plain formula in the test).
"""

import math

import pytest
import torch
from torch import nn

from mhgd.methods import clipping, mhgd


def make_batch_norm_identity(module: nn.Module) -> None:
    """Eval-mode batch norm with zero mean, unit variance and eps 0 passes values through."""
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm1d):
            layer.eps = 0.0
    module.eval()


def set_weight(linear: nn.Linear, rows: list[list[float]], bias: list[float] | None = None):
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(rows))
        if bias is not None:
            linear.bias.copy_(torch.tensor(bias))


def test_head_width_is_the_floor_of_the_mean():
    assert mhgd.hidden_width(64, 128) == 96
    assert mhgd.hidden_width(3, 4) == 3
    assert mhgd.hidden_width(512, 512) == 512


def test_head_logits_on_a_hand_case():
    heads = mhgd.AttentionHeads(d_front=2, d_back=2, heads=2)  # D2 = 2, units = 4
    # Units 0-1 belong to head 0, units 2-3 to head 1.
    set_weight(heads.key[0], [[1, 0], [0, 1], [1, 1], [0, 2]])
    set_weight(heads.query[0], [[1, 0], [0, 1], [1, 0], [0, 1]])
    make_batch_norm_identity(heads)
    v_back = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
    v_front = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    logits = heads(v_front, v_back)
    # Head 0: keys = v_back, queries = v_front; S[i, j] = <v_back_i, v_front_j>.
    # Head 1: keys = (x0 + x1, 2 x1) = (1, 0), (1, 2), (0, -2); queries = v_front.
    expected = torch.tensor(
        [
            [[1.0, 0.0, 1.0], [2.0, 1.0, 0.0], [-1.0, -1.0, 1.0]],
            [[1.0, 0.0, 1.0], [5.0, 2.0, 1.0], [-4.0, -2.0, 0.0]],
        ]
    )
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(mhgd.FrozenHeadLogits.of(heads)(v_front, v_back), expected)


@pytest.mark.parametrize(("d_front", "d_back"), [(4, 6), (6, 4), (5, 5)])
def test_frozen_heads_as_bilinear_forms_give_the_heads_logits(d_front: int, d_back: int):
    torch.manual_seed(0)
    heads = mhgd.AttentionHeads(d_front, d_back, heads=3)
    for norm in (heads.key[1], heads.query[1]):  # every affine term away from 0 and 1
        with torch.no_grad():
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_()
    heads.eval()
    v_front, v_back = torch.randn(7, d_front), torch.randn(7, d_back)
    frozen = mhgd.FrozenHeadLogits.of(heads)
    torch.testing.assert_close(frozen(v_front, v_back), heads(v_front, v_back))


def test_heads_in_training_mode_are_not_frozen():
    with pytest.raises(ValueError, match=r"eval\(\)"):
        mhgd.FrozenHeadLogits.of(mhgd.AttentionHeads(2, 2, heads=1))


def test_heads_normalise_keys_and_queries_in_training():
    torch.manual_seed(0)
    heads = mhgd.AttentionHeads(d_front=4, d_back=6, heads=3)
    v_front, v_back = torch.randn(32, 4) * 5 + 3, torch.randn(32, 6) * 5 + 3
    keys, queries = heads.key(v_back), heads.query(v_front)
    torch.testing.assert_close(keys.mean(0), torch.zeros(15), atol=1e-5, rtol=0)
    torch.testing.assert_close(queries.var(0, unbiased=False), torch.ones(15), atol=1e-3, rtol=0)
    assert keys.min() < 0  # no activation after the batch norm
    assert heads(v_front, v_back).shape == (3, 32, 32)


def test_linear_layers_use_he_normal_fan_out_init():
    torch.manual_seed(0)
    heads = mhgd.AttentionHeads(d_front=200, d_back=100, heads=8)  # D2 = 150, 1200 units
    estimator = mhgd.Estimator(d_front=200, d_back=100, heads=8)
    for linear, fan_out in [
        (heads.key[0], 1200),
        (heads.query[0], 1200),
        (estimator.hidden[0], 150),
        (estimator.output, 100),
    ]:
        assert linear.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
        assert linear.weight.mean().abs().item() < 0.1 * math.sqrt(2 / fan_out)
    assert heads.key[0].bias is None and estimator.hidden[0].bias is None
    assert torch.equal(estimator.output.bias, torch.zeros(100))


def hand_estimator(heads: int) -> mhgd.Estimator:
    """d_front = d_back = 2 (D2 = 2), hidden weight I, batch norm passing values through."""
    estimator = mhgd.Estimator(d_front=2, d_back=2, heads=heads)
    set_weight(estimator.hidden[0], [[1, 0], [0, 1]])
    make_batch_norm_identity(estimator)
    return estimator


# Row 0 of head 0 attends to the front samples with softmax(0, ln 3) = (1/4, 3/4); row 1 with
# (1/2, 1/2). A softmax over the other axis would give column sums of 1 instead.
LOG3 = math.log(3.0)
HEAD0 = [[0.0, LOG3], [0.0, 0.0]]
HEAD1 = [[LOG3, 0.0], [0.0, 0.0]]  # rows (3/4, 1/4) and (1/2, 1/2)
# h = ReLU(v_front) = [[1, 0], [0, 2]]: the -1 is cut by the ReLU.
V_FRONT = torch.tensor([[1.0, -1.0], [0.0, 2.0]])


def test_estimator_output_on_a_hand_case():
    estimator = hand_estimator(heads=1)
    set_weight(estimator.output, [[1, 0], [0, 1]], bias=[0, 0])
    estimated = estimator(torch.tensor([HEAD0]), V_FRONT)
    # Y row 0 = 1/4 (1, 0) + 3/4 (0, 2) = (0.25, 1.5); row 1 = (0.5, 1.0); then l2-normalised.
    expected = torch.tensor(
        [
            [0.25 / math.sqrt(2.3125), 1.5 / math.sqrt(2.3125)],
            [0.5 / math.sqrt(1.25), 1 / math.sqrt(1.25)],
        ]
    )
    torch.testing.assert_close(estimated, expected)

    loss, mean_cos = mhgd.mhan_loss(estimated, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    cos0, cos1 = 1.5 / math.sqrt(2.3125), 0.5 / math.sqrt(1.25)
    assert loss.item() == pytest.approx(((1 - cos0) + (1 - cos1)) / 2)
    assert mean_cos.item() == pytest.approx((cos0 + cos1) / 2)
    assert loss.requires_grad and not mean_cos.requires_grad


def test_estimator_concatenates_heads_in_order():
    estimator = hand_estimator(heads=2)
    # Output picks Y[:, 0] (head 0, unit 0) and Y[:, 3] (head 1, unit 1), plus bias (0.25, 0).
    set_weight(estimator.output, [[1, 0, 0, 0], [0, 0, 0, 1]], bias=[0.25, 0])
    estimated = estimator(torch.tensor([HEAD0, HEAD1]), V_FRONT)
    # Head 0: Y0 = [[0.25, 1.5], [0.5, 1]]; head 1: Y1 = [[0.75, 0.5], [0.5, 1]].
    # Row 0: (0.25 + 0.25, 0.5) -> (1, 1)/sqrt(2); row 1: (0.5 + 0.25, 1) -> (0.6, 0.8).
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.6, 0.8]])
    torch.testing.assert_close(estimated, expected)


def test_drop_head_in_training_zeroes_whole_rows_of_a_head_without_rescaling():
    estimator = hand_estimator(heads=2)
    set_weight(estimator.output, [[1, 0, 0, 0], [0, 0, 0, 1]], bias=[0.25, 0])
    estimator.train()
    estimator.hidden.eval()  # keep the hand-set batch norm
    # With A = 2 exactly one head survives per row (z_a > mean iff z_a is the larger one).
    # Row 0 keeping head 0: (0.25 + 0.25, 0) -> (1, 0); keeping head 1: (0.25, 0.5).
    # Row 1 keeping head 0: (0.5 + 0.25, 0) -> (1, 0); keeping head 1: (0.25, 1).
    row_options = [
        [(1.0, 0.0), (0.25 / math.sqrt(0.3125), 0.5 / math.sqrt(0.3125))],
        [(1.0, 0.0), (0.25 / math.sqrt(1.0625), 1 / math.sqrt(1.0625))],
    ]
    seen = [set(), set()]
    torch.manual_seed(0)
    for _ in range(40):
        estimated = estimator(torch.tensor([HEAD0, HEAD1]), V_FRONT)
        for row in range(2):
            matches = [
                torch.allclose(estimated[row], torch.tensor(option)) for option in row_options[row]
            ]
            assert sum(matches) == 1
            seen[row].add(matches.index(True))
    assert seen == [{0, 1}, {0, 1}]

    estimator.drop_head = False
    expected = torch.tensor([[1 / math.sqrt(2), 1 / math.sqrt(2)], [0.6, 0.8]])
    torch.testing.assert_close(estimator(torch.tensor([HEAD0, HEAD1]), V_FRONT), expected)


def test_drop_head_statistics():
    torch.manual_seed(0)
    heads, rows = 8, 20000
    keep = mhgd.drop_head_mask(heads, rows)
    assert keep.shape == (heads, rows) and keep.dtype == torch.bool
    kept_per_row = keep.sum(dim=0).float()
    assert kept_per_row.min() >= 1  # the largest z of a row always beats the row mean
    assert kept_per_row.mean().item() == pytest.approx(heads / 2, abs=0.05)
    assert keep.float().mean(dim=1).sub(0.5).abs().max() < 0.02  # each head kept half the time
    # Rows draw their own noise: kept counts of neighbouring rows are uncorrelated.
    centred = kept_per_row - kept_per_row.mean()
    correlation = (centred[1:] * centred[:-1]).mean() / centred.var()
    assert abs(correlation.item()) < 0.03
    # One head: z > mean(z) = z never holds, so the rule (taken literally) drops it.
    assert not mhgd.drop_head_mask(1, 100).any()


def test_relation_graph_rows_sum_to_one_over_front_samples():
    logits = torch.tensor([[[math.atanh(0.5), math.atanh(-0.5)], [2.0, 2.0]]])
    graph = mhgd.log_relation_graph(logits).exp()
    # Row 0: softmax(0.5, -0.5) = (sigmoid(1), sigmoid(-1)); row 1: tanh equal -> (1/2, 1/2).
    sigmoid1 = 1 / (1 + math.exp(-1))
    expected = torch.tensor([[[sigmoid1, 1 - sigmoid1], [0.5, 0.5]]])
    torch.testing.assert_close(graph, expected)


def test_transfer_loss_is_the_summed_kl_from_student_to_teacher():
    teacher_row = [math.atanh(0.5), math.atanh(-0.5)]  # graph row (sigmoid(1), sigmoid(-1))
    teacher = torch.tensor([[teacher_row, [0.0, 0.0]]] * 2)  # 2 identical heads, 2 rows
    student = torch.zeros(2, 2, 2)  # graph rows (1/2, 1/2)
    g1, g2 = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(1))
    # KL(G^S || G^T) of row 0 = sum 1/2 (log 1/2 - log g); row 1 is 0; summed over 2 heads.
    student_first = 0.5 * (math.log(0.5) - math.log(g1)) + 0.5 * (math.log(0.5) - math.log(g2))
    teacher_first = g1 * (math.log(g1) - math.log(0.5)) + g2 * (math.log(g2) - math.log(0.5))
    assert student_first == pytest.approx(0.120115, abs=1e-6)
    assert teacher_first == pytest.approx(0.110944, abs=1e-6)
    loss = mhgd.transfer_loss(student, teacher)
    assert loss.item() == pytest.approx(2 * student_first)
    assert mhgd.transfer_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_transfer_loss_is_finite_for_saturated_logits():
    student = torch.tensor([[[1e4, -1e4], [-1e4, 1e4]]], requires_grad=True)
    teacher = torch.tensor([[[-1e4, 1e4], [1e4, -1e4]]])
    loss = mhgd.transfer_loss(student, teacher)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()


def test_transfer_loss_passes_gradcheck():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(3, 4, 4, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(mhgd.transfer_loss, (student, teacher))


def test_shape_errors_explain_themselves():
    heads = mhgd.AttentionHeads(d_front=4, d_back=6, heads=2)
    with pytest.raises(ValueError, match=r"v_back must have shape \(N, 6\)"):
        heads(torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="same batch"):
        heads(torch.randn(3, 4), torch.randn(5, 6))
    estimator = mhgd.Estimator(d_front=4, d_back=6, heads=2)
    with pytest.raises(ValueError, match=r"\(2, 3, 3\)"):
        estimator(torch.randn(2, 3, 4), torch.randn(3, 4))
    with pytest.raises(ValueError, match="heads must be a positive integer"):
        mhgd.AttentionHeads(d_front=4, d_back=6, heads=0)
    with pytest.raises(ValueError, match="differ in shape"):
        mhgd.mhan_loss(torch.randn(3, 6), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"\(heads, N, N\)"):
        mhgd.transfer_loss(torch.randn(2, 3, 3), torch.randn(2, 3, 4))


def test_warmup_is_the_sigmoid_of_the_epoch():
    assert clipping.warmup(0) == 0.5
    assert clipping.warmup(1) == pytest.approx(0.7310585786300049)
    assert clipping.warmup(2) == pytest.approx(0.8807970779778823)
    assert clipping.warmup(10) == pytest.approx(0.9999546021312976)
    with pytest.raises(ValueError, match="epoch"):
        clipping.warmup(-1)


def test_clip_by_norm():
    torch.testing.assert_close(
        clipping.clip_by_norm(torch.tensor([0.0, 10.0]), 2.5), torch.tensor([0.0, 2.5])
    )
    torch.testing.assert_close(
        clipping.clip_by_norm(torch.tensor([0.3, 0.4]), 2.5), torch.tensor([0.3, 0.4])
    )
    assert torch.equal(clipping.clip_by_norm(torch.zeros(3), 0.0), torch.zeros(3))
    assert torch.equal(clipping.clip_by_norm(torch.tensor([1.0, 1.0]), 0.0), torch.zeros(2))


def linear_losses(ce_coefficients, transfer_coefficients):
    """Parameters and two linear losses whose gradients are the given coefficients."""
    params = [torch.zeros(2, requires_grad=True) for _ in ce_coefficients]
    ce = sum(
        (torch.tensor(c) * p).sum()
        for p, c in zip(params, ce_coefficients, strict=True)
        if c is not None
    )
    transfer = sum(
        (torch.tensor(t) * p).sum()
        for p, t in zip(params, transfer_coefficients, strict=True)
        if t is not None
    )
    return params, ce, transfer


def test_gradient_combination_clips_each_tensor_to_its_own_bound():
    params, ce, transfer = linear_losses(
        # g_CE of norm 5, 1, |(2, -2)|, 0, none, none
        [[3.0, 4.0], [1.0, 0.0], [2.0, -2.0], [0.0, 0.0], None, None],
        # g_transfer of norm 10 (> bound), 0.2 (< bound), none, 0, (1, 1), none
        [[0.0, 10.0], [0.12, 0.16], None, [0.0, 0.0], [1.0, 1.0], None],
    )
    stats = clipping.combine_clipped_gradients(ce, transfer, params, beta=1.0, epoch=0)
    # epoch 0: bound = beta * ||g_CE|| * 0.5, so 2.5 for the first tensor and 0.5 for the second.
    torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0 + 2.5]))
    torch.testing.assert_close(params[1].grad, torch.tensor([1.12, 0.16]))
    torch.testing.assert_close(params[2].grad, torch.tensor([2.0, -2.0]))
    assert torch.equal(params[3].grad, torch.zeros(2))  # ||g_transfer|| = 0 = bound: no NaN
    assert torch.equal(params[4].grad, torch.zeros(2))  # no g_CE: bound 0 clips everything
    assert params[5].grad is None
    assert stats["transfer_clipped_fraction"] == pytest.approx(2 / 4)  # tensors 0 and 4
    assert stats["ce_grad_norm"] == pytest.approx(math.sqrt(25 + 1 + 8))
    assert stats["transfer_grad_norm"] == pytest.approx(math.sqrt(100 + 0.04 + 2))
    assert stats["transfer_grad_norm_applied"] == pytest.approx(math.sqrt(2.5**2 + 0.04))


def test_gradient_combination_bound_follows_beta_and_the_epoch():
    for beta, epoch in [(1.0, 1), (2.0, 0), (0.3, 5)]:
        params, ce, transfer = linear_losses([[3.0, 4.0]], [[0.0, 100.0]])
        clipping.combine_clipped_gradients(ce, transfer, params, beta=beta, epoch=epoch)
        bound = beta * 5.0 / (1 + math.exp(-epoch))
        torch.testing.assert_close(params[0].grad, torch.tensor([3.0, 4.0 + bound]))


def test_gradient_combination_rejects_bad_arguments():
    params, ce, transfer = linear_losses([[1.0, 0.0]], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="beta"):
        clipping.combine_clipped_gradients(ce, transfer, params, beta=-1.0, epoch=0)
    with pytest.raises(ValueError, match="epoch"):
        clipping.combine_clipped_gradients(ce, transfer, params, beta=1.0, epoch=-1)
    with pytest.raises(ValueError, match="scalars"):
        clipping.combine_clipped_gradients(ce.expand(2), transfer, params, beta=1.0, epoch=0)
    with pytest.raises(ValueError, match="no parameters"):
        clipping.combine_clipped_gradients(ce, transfer, [], beta=1.0, epoch=0)
