"""What MHGD itself costs per student step, at the paper's sizes (batch 128, full width).

Three steps are timed side by side, round-robin, on the same batch:
  plain      the student's forward and backward plus the teacher's forward (any distillation
             method pays at least this)
  budget     plain plus a second backward pass through the student (MHGD's per-tensor clipping
             needs the CE and transfer gradients separately: two backward passes)
  mhgd       the real MHGD step: singular vectors of every sensed map, the frozen heads on the
             teacher's and the student's vectors, the KL of the graphs, two backward passes and
             the clipping
The target is mhgd / budget <= 1.10: the compression, heads and loss add at most a tenth.

    python benchmarks/bench_mhgd_step.py --pairs vgg wrn --rounds 3
"""

from __future__ import annotations

import mhgd  # first: it sets OpenMP's spinning as training does, before torch loads

# isort: split

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from timing import add_heap_option, heap_as_in_training, interleaved

from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import MHGD
from mhgd.models import build_model

MHGD_CONFIG = Path(mhgd.__file__).parent / "conf" / "method" / "mhgd.yaml"
PAIRS = {"vgg": ("vgg16", "vgg7"), "wrn": ("wrn22_4", "wrn10_4")}


def steps_for(pair: str, batch: int, width: float, device: torch.device) -> dict:
    torch.manual_seed(0)
    teacher_name, student_name = PAIRS[pair]
    teacher = build_model(teacher_name, num_classes=100, image_size=32, width=width).to(device)
    student = build_model(student_name, num_classes=100, image_size=32, width=width).to(device)
    teacher.eval().requires_grad_(False)
    images = torch.rand(batch, 3, 32, 32, device=device) - 0.5
    labels = torch.randint(0, 100, (batch,), device=device)
    params = list(student.parameters())

    def plain(second_backward: bool = False) -> None:
        with torch.no_grad():
            teacher(images)
        logits, _ = student(images)
        ce = F.cross_entropy(logits, labels)
        grads = torch.autograd.grad(ce, params, retain_graph=second_backward)
        if second_backward:
            torch.autograd.grad(ce, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g

    method = MHGD(teacher, student, OmegaConf.load(MHGD_CONFIG)).to(device)
    (stage,) = MHGD.pre_stages(method.cfg)
    method.load_pre_stage(stage, method.pre_stage_task(stage).state_dict())
    task = ClassifierTask(student, method, teacher)
    task.train_mode()
    return {
        "plain": plain,
        "budget": lambda: plain(second_backward=True),
        "mhgd": lambda: task.train_step(images, labels, epoch=1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    add_heap_option(parser)
    args = parser.parse_args()
    device = torch.device(args.device)
    heap = heap_as_in_training(device, args.glibc_heap)
    print(f"device {device}, batch {args.batch}, width {args.width}, torch {torch.__version__}")
    print(heap)
    for pair in args.pairs:
        seconds = interleaved(
            steps_for(pair, args.batch, args.width, device),
            rounds=args.rounds,
            steps=args.steps,
            device=device,
        )
        print(
            f"{pair}: plain {seconds['plain']:.3f}s  budget {seconds['budget']:.3f}s  "
            f"mhgd {seconds['mhgd']:.3f}s   mhgd/plain x{seconds['mhgd'] / seconds['plain']:.2f}"
            f"   mhgd/budget x{seconds['mhgd'] / seconds['budget']:.3f} (target <= 1.10)"
        )


if __name__ == "__main__":
    main()
