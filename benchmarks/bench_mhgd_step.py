"""What MHGD itself costs per student step, at the paper's sizes (batch 128, full width).

Three steps are timed side by side, round-robin, on the same batch:
  plain      the student's forward and backward plus the teacher's forward (any distillation
             method pays at least this)
  budget     plain plus a second backward pass through the student (MHGD's per-tensor clipping
             needs the CE and transfer gradients separately: two backward passes)
  mhgd       the real MHGD step: singular vectors of every sensed map, the frozen heads on the
             teacher's and the student's vectors, the KL of the graphs, two backward passes and
             the clipping
The target is mhgd / budget <= 1.10: the compression, heads and loss add at most a tenth. The
ratio is taken per round (the two steps ran side by side) and summarised by its median and a
95% confidence interval of that median, so that "met" means the whole interval is at or below
the target and a run on a noisy machine says "undecided" instead of a lucky or unlucky number.

    python benchmarks/bench_mhgd_step.py --pairs vgg wrn --rounds 30
"""

from __future__ import annotations

import mhgd  # first: it sets OpenMP's spinning as training does, before torch loads

# isort: split

import argparse
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from scipy import stats
from timing import add_step_options, interleaved_rounds, step_device

from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import MHGD
from mhgd.models import build_model

MHGD_CONFIG = Path(mhgd.__file__).parent / "conf" / "method" / "mhgd.yaml"
PAIRS = {"vgg": ("vgg16", "vgg7"), "wrn": ("wrn22_4", "wrn10_4")}
TARGET = 1.10  # the bound on mhgd / budget


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


def paired_ratio(over: list[float], under: list[float], target: float) -> str:
    """The per-round ratio over / under: its median, the median's 95% confidence interval and
    what they say of ``target``.

    The interval comes from a quantile (sign) test, which assumes nothing about the shape of the
    machine's noise; it needs at least 6 rounds.
    """
    ratios = [a / b for a, b in zip(over, under, strict=True)]
    median = statistics.median(ratios)
    interval = stats.quantile_test(ratios, q=median).confidence_interval(0.95)
    if interval.high <= target:
        verdict = "met"
    elif interval.low > target:
        verdict = "not met"
    elif len(ratios) < 6:
        verdict = "undecided: a 95% interval needs at least 6 rounds"
    else:
        verdict = "undecided: the interval holds the target"
    return (
        f"x{median:.3f}, 95% CI [{interval.low:.3f}, {interval.high:.3f}] over {len(ratios)} "
        f"rounds (target <= {target:.2f}: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    add_step_options(parser, rounds=10, steps=1)
    args = parser.parse_args()
    device = step_device(args)
    for pair in args.pairs:
        rounds = interleaved_rounds(
            steps_for(pair, args.batch, args.width, device),
            rounds=args.rounds,
            steps=args.steps,
            device=device,
        )
        seconds = {name: statistics.median(times) for name, times in rounds.items()}
        print(
            f"{pair}: median plain {seconds['plain']:.3f}s  budget {seconds['budget']:.3f}s  "
            f"mhgd {seconds['mhgd']:.3f}s\n"
            f"  mhgd/plain  x{seconds['mhgd'] / seconds['plain']:.3f}\n"
            f"  mhgd/budget {paired_ratio(rounds['mhgd'], rounds['budget'], TARGET)}"
        )


if __name__ == "__main__":
    main()
