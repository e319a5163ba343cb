"""Training a classifier, alone or under a distillation method, as a task for the loop.

Imports only torch and the package's torch modules (not the loop, which needs tqdm), so that
benchmarks/bench_gpu.py runs on a machine that has nothing but torch.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mhgd.methods.base import Distiller, EvalProbe, Stats, no_grad_teacher
from mhgd.models.base import SensedModel


class ClassifierTask:
    """Cross-entropy plus whatever the method adds; top-1 accuracy (%) is the score.

    The teacher, when the method needs one, stays in eval mode and gets no gradient.
    ``autocast`` runs the networks in that dtype (the methods compute their own numerics in
    float32); ``compile`` runs them through ``torch.compile``, which shares their parameters,
    so the state dict, checkpoints and exact resume are those of the plain modules.
    """

    score_name = "top1"

    def __init__(
        self,
        model: SensedModel,
        method: Distiller,
        teacher: SensedModel | None = None,
        *,
        autocast: torch.dtype | None = None,
        channels_last: bool = False,
        compile: bool = False,
        probe: EvalProbe | None = None,
    ) -> None:
        if method.uses_teacher and teacher is None:
            raise ValueError(f"method {method.name!r} needs a teacher, none was given")
        self.model, self.method, self.teacher = model, method, teacher
        # -- evaluation probe: the method's own (MHGD: its heads), else a given one (a cached
        # MHAN's graph KL for a student of another method)
        self.probe = method.eval_probe() or probe
        self.autocast, self.channels_last = autocast, channels_last
        self._device = next(model.parameters()).device
        self._model: Any = torch.compile(model) if compile else model
        self._teacher: Any = torch.compile(teacher) if compile and teacher is not None else teacher
        self.summary_keys: tuple[str, ...] = ("ce", "top1")

    def trainable_parameters(self) -> list[nn.Parameter]:
        own = [p for p in self.method.parameters() if p.requires_grad]
        return list(self.model.parameters()) + own

    def train_mode(self) -> None:
        self.model.train()
        self.method.train()
        if self.teacher is not None:
            self.teacher.eval()

    def _prepare(self, images: Tensor) -> Tensor:
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _precision(self) -> Any:
        if self.autocast is None:
            return nullcontext()
        return torch.autocast(self._device.type, dtype=self.autocast)

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> Stats:
        images = self._prepare(images)
        with self._precision():
            out = self._model(images)
            teacher_out = (
                no_grad_teacher(self._teacher, images)
                if self.teacher is not None and self.method.distils_in_main_stage
                else None
            )
            terms = self.method.loss_terms(out, teacher_out, labels)
            ce = F.cross_entropy(out[0].float(), labels)
        self.summary_keys = ("ce", *terms, "top1")
        stats = self.method.backward(ce, terms, list(self.model.parameters()), epoch)
        top1 = (out[0].argmax(1) == labels).float().mean().double() * 100.0
        row = {"ce": ce.detach(), "top1": top1}
        row.update({k: v.detach().float() for k, v in terms.items()})
        row.update(stats)
        return row

    @torch.no_grad()
    def evaluate(self, batches: Iterable[tuple[Tensor, Tensor]]) -> dict[str, float]:
        self.model.eval()
        sums: Tensor | float = 0.0  # [correct, summed loss, probes...] on the device, read once
        names: list[str] = []
        total = 0
        for images, labels in batches:
            with self._precision():
                out = self._model(self._prepare(images))
            logits = out[0].float()
            loss = F.cross_entropy(logits, labels, reduction="sum")
            correct = (logits.argmax(1) == labels).sum()
            row = [correct.double(), loss.double()]
            if self.probe is not None:
                probed = self.probe(out, self._prepare(images))
                names = sorted(probed)
                row += [probed[name].double() * labels.numel() for name in names]
            sums = sums + torch.stack(row)
            total += labels.numel()
        correct, loss, *probe_sums = torch.as_tensor(sums).tolist()
        result = {"top1": 100.0 * correct / total, "ce": loss / total}
        return result | {name: value / total for name, value in zip(names, probe_sums, strict=True)}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
