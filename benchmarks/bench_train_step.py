"""Images/s of one real training step (forward, backward, SGD) with and without bf16 autocast.

Variants of the same step are interleaved round by round in one run, so a noisy machine slows
them alike and the printed ratios stay meaningful. On a GPU run it with --device cuda.

    python benchmarks/bench_train_step.py --models vgg7 resnet --batch 128 --rounds 3
"""

from __future__ import annotations

import mhgd  # noqa: F401  (first: it sets OpenMP's spinning as training does, before torch loads)

# isort: split

import argparse

import torch
from timing import add_step_options, interleaved, step_device

from mhgd.data import Batches, ImageSet
from mhgd.engine.optim import build_sgd
from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import Distiller
from mhgd.models import build_model

VARIANTS = {
    "fp32": {"autocast": None, "channels_last": False},
    "bf16": {"autocast": torch.bfloat16, "channels_last": False},
    "bf16+channels_last": {"autocast": torch.bfloat16, "channels_last": True},
}


def make_step(model_name: str, variant: dict, batch: int, device: torch.device, width: float):
    torch.manual_seed(0)
    model = build_model(model_name, num_classes=100, image_size=32, width=width).to(device)
    if variant["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    task = ClassifierTask(model, Distiller(None, model, None), **variant)
    optimizer = build_sgd(task.trainable_parameters(), 0.01, 0.9, 5e-4)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8)
    labels = torch.randint(0, 100, (batch,))
    images, labels = next(iter(Batches(ImageSet(images, labels), batch, device=device)))
    task.train_mode()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task.train_step(images, labels, epoch=0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg7", "resnet"])
    add_step_options(parser, rounds=3, steps=3)
    args = parser.parse_args()
    device = step_device(args)
    for model_name in args.models:
        steps = {
            name: make_step(model_name, v, args.batch, device, args.width)
            for name, v in VARIANTS.items()
        }
        seconds = interleaved(steps, rounds=args.rounds, steps=args.steps, device=device)
        for name, took in seconds.items():
            print(
                f"{model_name:12s} {name:20s} {args.batch / took:8.1f} img/s"
                f"   x{seconds['fp32'] / took:.2f} vs fp32"
            )


if __name__ == "__main__":
    main()
