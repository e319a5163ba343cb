"""MHGD (method.md sections 3-5): attention heads, estimator, losses, and the method.

The first half is the mathematics, one function or module per formula; the second half wires
it into the distillation contract (``MHGD``) and the MHAN stage (``MhanTask``). Shared with
KD-SVD: the feature compression of section 2 (``mhgd.methods.svd``) and the per-tensor gradient
clipping of section 5 (``mhgd.methods.clipping``).

Shapes: per module, front vectors V^F (N x D_F) and back vectors V^B (N x D_B) from
``mhgd.methods.svd``; attention logits S (A x N x N) with rows i the back samples and columns j
the front samples. Unit ``a * D2 + d`` of a head projection belongs to head a (the layout is
invisible to the method: heads see i.i.d. initialised, per-unit normalised units). Batch norm
keeps torch's defaults, which are the authors' settings (affine, momentum 0.1 = their decay 0.9,
eps 1e-5) (code).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mhgd.config.schema import MethodConfig, bounded, choice
from mhgd.errors import ConfigError
from mhgd.methods.base import (
    Distiller,
    ModelOutput,
    PreStage,
    Stats,
    float32_region,
    register,
    require_same_channels,
)
from mhgd.methods.clipping import combine_clipped_gradients  # section 5's gradient rule
from mhgd.methods.svd import SIGN_RULES, ZeroedGradientCounter, student_vectors, teacher_vectors
from mhgd.models.base import SensedModel, SensingPoint

DEFAULT_HEADS = 8


def hidden_width(d_front: int, d_back: int) -> int:
    """D2 = floor((D_F + D_B) / 2), the per-head width (section 3)."""
    return (d_front + d_back) // 2


def _check_widths(d_front: int, d_back: int, heads: int) -> None:
    for name, value in (("d_front", d_front), ("d_back", d_back), ("heads", heads)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _he_fan_out(linear: nn.Linear) -> nn.Linear:
    """He normal init over fan-out, zero bias: the authors' init for every MHAN layer (code)."""
    nn.init.kaiming_normal_(linear.weight, mode="fan_out", nonlinearity="relu")
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)
    return linear


def _check_vectors(name: str, vectors: Tensor, width: int) -> None:
    if vectors.dim() != 2 or vectors.shape[1] != width:
        raise ValueError(
            f"{name} must have shape (N, {width}), got {tuple(vectors.shape)}; pass one "
            "compressed vector per sample (mhgd.methods.svd)"
        )


class AttentionHeads(nn.Module):
    """A heads of a module: the logits S_a[i, j] = <key_a(v^B_i), query_a(v^F_j)> (section 3).

    Key and query are a bias-free linear layer then batch norm, no activation, no scaling (code).
    """

    def __init__(self, d_front: int, d_back: int, heads: int = DEFAULT_HEADS) -> None:
        super().__init__()
        _check_widths(d_front, d_back, heads)
        self.d_front, self.d_back, self.heads = d_front, d_back, heads
        self.width = hidden_width(d_front, d_back)
        units = heads * self.width
        self.key = nn.Sequential(
            _he_fan_out(nn.Linear(d_back, units, bias=False)), nn.BatchNorm1d(units)
        )
        self.query = nn.Sequential(
            _he_fan_out(nn.Linear(d_front, units, bias=False)), nn.BatchNorm1d(units)
        )

    def forward(self, v_front: Tensor, v_back: Tensor) -> Tensor:
        _check_vectors("v_front", v_front, self.d_front)
        _check_vectors("v_back", v_back, self.d_back)
        if v_front.shape[0] != v_back.shape[0]:
            raise ValueError(
                f"front and back vectors must come from the same batch, got "
                f"{v_front.shape[0]} and {v_back.shape[0]} samples"
            )
        n = v_front.shape[0]
        keys = self.key(v_back).view(n, self.heads, self.width)
        queries = self.query(v_front).view(n, self.heads, self.width)
        return torch.einsum("iad,jad->aij", keys, queries)


def _homogeneous(projection: nn.Sequential, heads: int) -> Tensor:
    """An eval-mode linear + batch norm, y = s * (W v) + c, as the matrix [diag(s) W, c] that maps
    [v; 1] to y: (A, D2, D + 1) per head, in float64."""
    linear, norm = projection
    if norm.training or norm.running_mean is None or norm.running_var is None:
        raise ValueError(
            "frozen heads need batch norm in eval mode with running statistics; call "
            ".eval() on the heads first"
        )
    scale = norm.weight.double() / (norm.running_var.double() + norm.eps).sqrt()
    shift = norm.bias.double() - norm.running_mean.double() * scale
    weight = linear.weight.double() * scale[:, None]
    return torch.cat([weight, shift[:, None]], dim=1).view(heads, -1, linear.in_features + 1)


def _with_one(vectors: Tensor) -> Tensor:
    """[v; 1] for every row v: homogeneous coordinates."""
    return F.pad(vectors, (0, 1), value=1.0)


@dataclass(frozen=True)
class FrozenHeadLogits:
    """The logits of frozen heads (the student stage's) as one bilinear form per head.

    Eval-mode batch norm is affine, so key_a(v) = K_a [v; 1] with K_a = [diag(s_ka) W_ka, c_ka]
    (scale s and shift c of the batch norm) and likewise query_a(v) = Q_a [v; 1]. Section 3's
    S_a[i, j] = <key_a(v^B_i), query_a(v^F_j)> is then [v^B_i; 1]^T H_a [v^F_j; 1] with
    H_a = K_a^T Q_a, a (D_B + 1) x (D_F + 1) matrix: one product per side instead of two
    D2-wide projections, about half the FLOPs. Built in float64 from the heads, applied in
    float32.
    """

    forms: Tensor  # back first: (D_B + 1, A (D_F + 1)), [H_1 ... H_A]; else of the H_a^T
    back_first: bool  # contract the wider side first (D_F <= D_B)
    widths: tuple[int, int]  # (D_F, D_B)

    @classmethod
    def of(cls, heads: AttentionHeads) -> FrozenHeadLogits:
        keys = _homogeneous(heads.key, heads.heads)
        queries = _homogeneous(heads.query, heads.heads)
        back_first = heads.d_front <= heads.d_back
        forms = torch.einsum("adb,adf->baf" if back_first else "adb,adf->fab", keys, queries)
        return cls(
            forms=forms.reshape(forms.shape[0], -1).to(heads.key[0].weight.dtype),
            back_first=back_first,
            widths=(heads.d_front, heads.d_back),
        )

    def __call__(self, v_front: Tensor, v_back: Tensor) -> Tensor:
        """S (A x N x N), as ``AttentionHeads.forward`` gives it."""
        _check_vectors("v_front", v_front, self.widths[0])
        _check_vectors("v_back", v_back, self.widths[1])
        n, front, back = v_front.shape[0], _with_one(v_front), _with_one(v_back)
        if self.back_first:
            mixed = (back @ self.forms).view(n, -1, front.shape[1])  # rows i: [v^B_i; 1]^T H_a
            return torch.einsum("iaf,jf->aij", mixed, front)
        mixed = (front @ self.forms).view(n, -1, back.shape[1])  # rows j: [v^F_j; 1]^T H_a^T
        return torch.einsum("jab,ib->aij", mixed, back)


def drop_head_mask(heads: int, rows: int, device: torch.device | None = None) -> Tensor:
    """Which heads each row keeps, (A, N) bool: head a iff z[a, i] > mean_a z[., i] (code).

    Gaussian z makes each head kept with probability 1/2 (A/2 heads per row on average) and at
    least one kept per row when A >= 2. With A = 1 the rule never holds, so the only head is
    always dropped: that is the authors' rule taken literally; turn drop-head off for A = 1.
    """
    z = torch.randn(heads, rows, device=device)
    return z > z.mean(dim=0, keepdim=True)


class Estimator(nn.Module):
    """Predicts the back vectors from the front vectors through the heads' attention (section 4).

    h = ReLU(BN(Linear(V^F))), P_a = softmax_j(S_a), drop-head in training, Y = concat_a(P_a h),
    V^B_hat = l2normalize(Linear(Y)). Discarded after the MHAN stage.
    """

    def __init__(
        self, d_front: int, d_back: int, heads: int = DEFAULT_HEADS, drop_head: bool = True
    ) -> None:
        super().__init__()
        _check_widths(d_front, d_back, heads)
        self.d_front, self.heads, self.drop_head = d_front, heads, drop_head
        width = hidden_width(d_front, d_back)
        self.hidden = nn.Sequential(
            _he_fan_out(nn.Linear(d_front, width, bias=False)), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.output = _he_fan_out(nn.Linear(heads * width, d_back, bias=True))

    def forward(self, logits: Tensor, v_front: Tensor) -> Tensor:
        _check_vectors("v_front", v_front, self.d_front)
        n = v_front.shape[0]
        if logits.shape != (self.heads, n, n):
            raise ValueError(
                f"attention logits must have shape ({self.heads}, {n}, {n}) (heads, back "
                f"samples, front samples), got {tuple(logits.shape)}"
            )
        attention = logits.softmax(dim=-1)  # over the front samples j
        if self.training and self.drop_head:
            keep = drop_head_mask(self.heads, n, device=logits.device)
            attention = attention * keep.unsqueeze(-1).to(attention.dtype)  # no rescaling
        mixed = attention @ self.hidden(v_front)  # (A, N, D2)
        concatenated = mixed.transpose(0, 1).reshape(n, -1)  # head a in columns a*D2 ...
        return F.normalize(self.output(concatenated), dim=-1)


def mhan_loss(v_back_hat: Tensor, v_back: Tensor) -> tuple[Tensor, Tensor]:
    """Stage-2 loss of one module, mean_i (1 - cos(V^B_hat_i, V^B_i)), and the mean cosine.

    The caller sums the losses of the modules (section 4); the cosine is detached, for logging.
    """
    if v_back_hat.shape != v_back.shape:
        raise ValueError(
            f"estimated and true back vectors differ in shape: {tuple(v_back_hat.shape)} vs "
            f"{tuple(v_back.shape)}"
        )
    cosines = F.cosine_similarity(v_back_hat, v_back, dim=-1)
    return (1.0 - cosines).mean(), cosines.detach().mean()


def log_relation_graph(logits: Tensor) -> Tensor:
    """log G_a = log softmax_j(tanh(S_a)), the graph over the batch (section 5)."""
    return F.log_softmax(torch.tanh(logits), dim=-1)


def transfer_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(G^S || G^T) of one module, summed over heads, rows and columns (code; section 5).

    Student first. Works in log space, so saturated graphs give no log(0).
    """
    if student_logits.shape != teacher_logits.shape or student_logits.dim() != 3:
        raise ValueError(
            "student and teacher attention logits must both have shape (heads, N, N), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    log_student = log_relation_graph(student_logits)
    log_teacher = log_relation_graph(teacher_logits)
    # kl_div(input, target) is sum exp(target) (target - input): the target is the student.
    return F.kl_div(log_teacher, log_student, reduction="sum", log_target=True)


def graph_kl_per_row(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(G^S || G^T) of one module, averaged over heads and rows: (the transfer loss) / (A N).

    The held-out measure of the transfer (it does not grow with the batch's row count or A).
    """
    heads, rows = student_logits.shape[0], student_logits.shape[1]
    return transfer_loss(student_logits, teacher_logits) / (heads * rows)


# -- the method behind the contract (mhgd.methods.base) ---------------------------------------
def module_widths(sensing: Sequence[SensingPoint]) -> list[tuple[int, int]]:
    """(D_F, D_B) of each module m = 1..M: consecutive sensing points (section 2)."""
    return [(front.channels, back.channels) for front, back in itertools.pairwise(sensing)]


class MhanTask:
    """Stage 2: heads and estimators learn, on the frozen teacher, to explain each sample's back
    vector from the batch's front vectors. Score: mean cosine over modules (higher is better).
    """

    score_name = "cos"
    summary_keys = ("loss",)

    def __init__(
        self,
        teacher: SensedModel,
        heads: nn.ModuleList,
        drop_head: bool,
        sign: str,
        *,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        """``autocast``, ``channels_last`` and ``compile`` apply to the teacher's forward pass
        (as in ClassifierTask); the vectors, heads and estimators always run in float32."""
        self.teacher, self.heads, self.sign = teacher, heads, sign
        self.estimators = nn.ModuleList(
            Estimator(h.d_front, h.d_back, h.heads, drop_head=drop_head) for h in heads
        ).to(next(heads.parameters()).device)
        self.autocast, self.channels_last = autocast, channels_last
        self._teacher: Any = torch.compile(teacher) if compile else teacher

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self.heads.parameters(), *self.estimators.parameters()]

    def train_mode(self) -> None:
        self.teacher.eval()
        self.heads.train()  # the only stage where the heads' BN statistics move
        self.estimators.train()

    def _losses(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        precision = torch.autocast(images.device.type, self.autocast, self.autocast is not None)
        with torch.no_grad(), precision:
            maps = self._teacher(images)[1]
        with float32_region(images):
            with torch.no_grad():
                vectors = [teacher_vectors(f.float(), self.sign) for f in maps]
            total, cosines = images.new_zeros((), dtype=torch.float32), []
            for m, (heads, estimator) in enumerate(zip(self.heads, self.estimators, strict=True)):
                v_front, v_back = vectors[m], vectors[m + 1]
                loss, cosine = mhan_loss(estimator(heads(v_front, v_back), v_front), v_back)
                total = total + loss
                cosines.append(cosine)
        return total, cosines

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> Stats:
        loss, cosines = self._losses(images)
        loss.backward()
        return {"loss": loss.detach(), **{f"cos_m{m + 1}": c for m, c in enumerate(cosines)}}

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        self.heads.eval()
        self.estimators.eval()
        sums: Tensor | float = 0.0  # [loss, cos_m1, ...] weighted by batch size, on the device
        count = 0
        for images, _ in batches:
            loss, cosines = self._losses(images)
            sums = sums + torch.stack([loss, *cosines]).double() * images.shape[0]
            count += images.shape[0]
        names = ["loss", *(f"cos_m{m + 1}" for m in range(len(self.heads)))]
        row = dict(zip(names, (torch.as_tensor(sums) / count).tolist(), strict=True))
        row["cos"] = sum(row[f"cos_m{m + 1}"] for m in range(len(self.heads))) / len(self.heads)
        return row

    def state_dict(self) -> dict[str, Any]:
        return {"heads": self.heads.state_dict(), "estimators": self.estimators.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.heads.load_state_dict(state["heads"])
        self.estimators.load_state_dict(state["estimators"])


@dataclass
class MhanConfig:
    """``method.mhan``: stage 2, the MHAN trained on the frozen teacher."""

    epochs: int = bounded(20, ge=1)
    lr: float = bounded(0.1, gt=0)
    drop_head: bool = True
    seed: int = bounded(0, ge=0)
    weight_decay: float = bounded(1.0e-3, ge=0)  # the authors' 5e-4 * sum(w^2) term


@dataclass
class MhgdConfig(MethodConfig):
    name: str = "mhgd"
    heads: int = bounded(8, ge=0)
    beta: float = bounded(1.0, ge=0)
    student_k: int = bounded(4, ge=1)
    sign: str = choice("sum", *SIGN_RULES)
    adapter: bool = False
    mhan: MhanConfig = field(default_factory=MhanConfig)


class GraphProbe:
    """The mechanism as a metric: the student's graph KL to the teacher through frozen heads.

    ``graph_kl`` is the mean over modules, heads and rows of KL(G^S || G^T) on a held-out batch
    (``graph_kl_per_row``). MHGD's students are probed through their own heads; any other
    student of the same teacher can be probed through a cached MHAN's heads
    (``probe_mhan=<MHAN run dir>``), so a table shows the transfer beside accuracy.
    """

    def __init__(
        self,
        teacher: SensedModel,
        heads: nn.ModuleList,
        sign: str,
        student_k: int,
        adapters: nn.ModuleList | None = None,
    ) -> None:
        self.teacher, self.heads, self.sign, self.student_k = teacher, heads, sign, student_k
        self.adapters = adapters
        self.counter = ZeroedGradientCounter()  # no gradients flow here; the API needs one

    @classmethod
    def from_mhan(
        cls, teacher: SensedModel, heads_state: Mapping[str, Tensor], method_cfg: Any
    ) -> GraphProbe:
        """A probe through the heads of a trained MHAN (its task state's ``heads``)."""
        count = int(method_cfg.heads)
        heads = nn.ModuleList(
            AttentionHeads(d_front, d_back, count)
            for d_front, d_back in module_widths(teacher.sensing)
        ).to(next(teacher.parameters()).device)
        try:
            heads.load_state_dict(heads_state)
        except RuntimeError as exc:
            raise ConfigError(
                f"the MHAN heads do not fit this teacher's sensing points: {exc}"
            ) from exc
        heads.eval().requires_grad_(False)
        return cls(teacher, heads, str(method_cfg.sign), int(method_cfg.student_k))

    @torch.no_grad()
    def __call__(self, student_out: ModelOutput, images: Tensor) -> dict[str, Tensor]:
        training = self.heads.training
        self.heads.eval()
        student_maps = student_out[1]
        if self.adapters is not None:
            student_maps = [adapt(f) for adapt, f in zip(self.adapters, student_maps, strict=True)]
        t_vectors = [teacher_vectors(f.float(), self.sign) for f in self.teacher(images)[1]]
        s_vectors = [
            student_vectors(f.float(), t, self.student_k, self.counter)
            for f, t in zip(student_maps, t_vectors, strict=True)
        ]
        total = t_vectors[0].new_zeros(())
        for m, heads in enumerate(self.heads):
            total += graph_kl_per_row(
                heads(s_vectors[m], s_vectors[m + 1]), heads(t_vectors[m], t_vectors[m + 1])
            )
        self.heads.train(training)
        return {"graph_kl": total / len(self.heads)}


@register
class MHGD(Distiller):
    """Multi-head graph distillation: the student matches the teacher's attention graphs.

    ``heads`` (A) = 0 is the student alone (Table 4's first column): no teacher, no MHAN.
    """

    name = "mhgd"
    Config = MhgdConfig
    requires_teacher = True

    def __init__(self, teacher: SensedModel | None, student: SensedModel, cfg: Any) -> None:
        super().__init__(teacher, student, cfg)
        self.beta, self.sign, self.student_k = float(cfg.beta), str(cfg.sign), int(cfg.student_k)
        self._teacher = (teacher,)  # a reference, not a submodule: its weights are not ours
        self.counter = ZeroedGradientCounter()
        sensing = teacher.sensing if teacher is not None else student.sensing
        self.heads = (
            nn.ModuleList(
                AttentionHeads(d_front, d_back, int(cfg.heads))
                for d_front, d_back in module_widths(sensing)
            )
            if int(cfg.heads) > 0
            else nn.ModuleList()
        )
        # (choice) an optional student-side 1x1 conv + BN per sensing point, for pairs whose
        # channel counts differ; trained with the student, off by default.
        self.adapters = (
            nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(s.channels, t.channels, 1, bias=False),
                    nn.BatchNorm2d(t.channels),
                    nn.ReLU(),
                )
                for s, t in zip(student.sensing, sensing, strict=True)
            )
            if cfg.adapter and teacher is not None
            else None
        )
        self._frozen: list[FrozenHeadLogits] = []  # the frozen heads' forms, and of which tensors
        self._frozen_state: list[tuple[torch.device, int, int]] = []

    @classmethod
    def needs_teacher(cls, cfg: Any) -> bool:
        return int(cfg.heads) > 0

    @classmethod
    def describe(cls, cfg: Any) -> dict[str, Any]:
        return {
            "heads": int(cfg.heads),
            "mhan_epochs": int(cfg.mhan.epochs),
            "beta": float(cfg.beta),
        }

    @classmethod
    def check_pair(
        cls, cfg: Any, teacher: Sequence[SensingPoint], student: Sequence[SensingPoint]
    ) -> None:
        if len(teacher) != len(student):
            raise ConfigError(
                f"MHGD pairs sensing points one to one, but the teacher has {len(teacher)} and "
                f"the student {len(student)}; pick a pair of the same family"
            )
        if not cfg.adapter:
            require_same_channels(cls.name, teacher, student, adapter_hint=True)

    @classmethod
    def pre_stages(cls, cfg: Any) -> list[PreStage]:
        if int(cfg.heads) == 0:
            return []
        mhan = cfg.mhan
        return [
            PreStage(
                name="mhan",
                shared=True,
                config={
                    "heads": int(cfg.heads),
                    "drop_head": bool(mhan.drop_head) and int(cfg.heads) > 1,
                    "sign": str(cfg.sign),
                    "seed": int(mhan.seed),
                },
                epochs=int(mhan.epochs),
                lr=float(mhan.lr),
                weight_decay=float(mhan.weight_decay),
            )
        ]

    def pre_stage_task(self, stage: PreStage, **runtime: Any) -> MhanTask:
        if stage.name != "mhan":
            return super().pre_stage_task(stage)
        self.heads.requires_grad_(True)
        drop_head = bool(stage.config["drop_head"])
        return MhanTask(self._teacher[0], self.heads, drop_head, self.sign, **runtime)

    def load_pre_stage(self, stage: PreStage, task_state: Mapping[str, Any]) -> None:
        if stage.name != "mhan":
            super().load_pre_stage(stage, task_state)
        self.heads.load_state_dict(task_state["heads"])
        self.heads.requires_grad_(False)  # frozen for the student stage (section 5)

    def eval_probe(self) -> GraphProbe | None:
        """The graph KL through this student's own (frozen) heads, when it distils."""
        if not len(self.heads) or self._teacher[0] is None:
            return None
        return GraphProbe(self._teacher[0], self.heads, self.sign, self.student_k, self.adapters)

    def train(self, mode: bool = True) -> MHGD:
        """The heads stay in eval mode in the student stage: running statistics from stage 2."""
        super().train(mode)
        self.heads.eval()
        return self

    def loss_terms(
        self, student_out: ModelOutput, teacher_out: ModelOutput | None, labels: Tensor
    ) -> dict[str, Tensor]:
        if teacher_out is None or not len(self.heads):
            return {}
        student_maps = student_out[1]
        if self.adapters is not None:  # network layers: they run in the networks' precision
            student_maps = [adapt(f) for adapt, f in zip(self.adapters, student_maps, strict=True)]
        with float32_region(student_maps[0]):
            t_vectors = [teacher_vectors(f.float(), self.sign) for f in teacher_out[1]]
            s_vectors = [
                student_vectors(f.float(), t, self.student_k, self.counter)
                for f, t in zip(student_maps, t_vectors, strict=True)
            ]
            loss = student_maps[0].new_zeros((), dtype=torch.float32)
            for m, heads in enumerate(self._head_logits()):
                with torch.no_grad():
                    s_teacher = heads(t_vectors[m], t_vectors[m + 1])
                s_student = heads(s_vectors[m], s_vectors[m + 1])
                loss = loss + transfer_loss(s_student, s_teacher)
        return {"transfer": loss}

    def _head_logits(self) -> Sequence[Callable[[Tensor, Tensor], Tensor]]:
        """The heads as the student stage applies them: frozen, as bilinear forms
        (``FrozenHeadLogits``), rebuilt whenever one of their tensors changed (a loaded
        checkpoint, a move to another device); heads that still learn, as themselves."""
        if self.heads.training or any(p.requires_grad for p in self.heads.parameters()):
            return list(self.heads)
        tensors = itertools.chain(self.heads.parameters(), self.heads.buffers())
        state = [(t.device, t.data_ptr(), t._version) for t in tensors]
        if state != self._frozen_state:
            self._frozen = [FrozenHeadLogits.of(h) for h in self.heads]
            self._frozen_state = state
        return self._frozen

    def backward(
        self, ce: Tensor, terms: Mapping[str, Tensor], params: Sequence[nn.Parameter], epoch: int
    ) -> Stats:
        if "transfer" not in terms:
            return super().backward(ce, terms, params, epoch)
        own = [p for p in self.parameters() if p.requires_grad]  # the optional adapters
        if own:  # they learn from the transfer loss alone, so their gradient is not clipped
            grads = torch.autograd.grad(terms["transfer"], own, retain_graph=True)
            for param, grad in zip(own, grads, strict=True):
                param.grad = grad
        stats = combine_clipped_gradients(ce, terms["transfer"], params, self.beta, epoch)
        stats["zeroed_svd_grads"] = self.counter.take()
        return stats
