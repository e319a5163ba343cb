"""Training a classifier, alone or under a distillation method, as a task for the loop."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mhgd.engine.loop import Batches
from mhgd.methods.base import Distiller, EvalProbe, no_grad_teacher
from mhgd.models.base import SensedModel


class ClassifierTask:
    """Cross-entropy plus whatever the method adds; top-1 accuracy (%) is the score.

    The teacher, when the method needs one, stays in eval mode and gets no gradient.
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

    def train_step(self, images: Tensor, labels: Tensor, epoch: int) -> dict[str, float]:
        images = self._prepare(images)
        with self._precision():
            out = self.model(images)
            teacher_out = (
                no_grad_teacher(self.teacher, images)
                if self.teacher is not None and self.method.distils_in_main_stage
                else None
            )
            terms = self.method.loss_terms(out, teacher_out, labels)
            ce = F.cross_entropy(out[0].float(), labels)
        stats = self.method.backward(ce, terms, list(self.model.parameters()), epoch)
        top1 = (out[0].argmax(1) == labels).float().mean().item() * 100.0
        row = {"ce": ce.item(), "top1": top1}
        row.update({k: v.detach().float().item() for k, v in terms.items()})
        row.update(stats)
        return row

    @torch.no_grad()
    def evaluate(self, batches: Batches) -> dict[str, float]:
        self.model.eval()
        correct, loss, total = 0, 0.0, 0
        probed: dict[str, float] = {}
        for images, labels in batches:
            with self._precision():
                out = self.model(self._prepare(images))
            logits = out[0].float()
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            total += labels.numel()
            if self.probe is not None:
                for name, value in self.probe(out, self._prepare(images)).items():
                    probed[name] = probed.get(name, 0.0) + value.item() * labels.numel()
        row = {"top1": 100.0 * correct / total, "ce": loss / total}
        return row | {name: value / total for name, value in probed.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "method": self.method.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"])
