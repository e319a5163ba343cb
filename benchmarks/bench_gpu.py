"""GPU throughput of the paper's training stages, with no data set, no network and only torch.

Synthetic CIFAR-100-shaped (32x32, 100 classes) and TinyImageNet-shaped (64x64, 200 classes)
batches live on the device; the paper's networks run at full width. For each pair (VGG16 ->
VGG7, WRN-22-4 -> WRN-10-4) and each variant (fp32, bf16, bf16+channels_last, each with and
without torch.compile) one full training step (forward, backward, SGD) of each stage is timed,
variants interleaved round by round:

  teacher   the teacher alone (cross-entropy)
  mhan      MHGD's stage 2: the frozen teacher's forward, its singular vectors, heads, estimators
  student   the student alone (cross-entropy)
  mhgd      the MHGD student step, and against it its budget: the student's forward and two
            backward passes plus the teacher's forward (what any two-gradient method pays)

with peak GPU memory per stage and variant. Then K = 1, 2, 4, 8 processes train the MHGD student
on one GPU at once (aggregate images/s), and the GPU-hours of Table 4 and Table 1 are
estimated from the measured rates (the approximations are printed with them).

Needs torch and this package's torch modules only (no Hydra, omegaconf, submitit, Optuna, W&B,
tqdm), so it runs on a bare GPU machine:

    PYTHONPATH=. python benchmarks/bench_gpu.py --device cuda
    PYTHONPATH=. python benchmarks/bench_gpu.py --device cpu --width 0.125 --batch 8 \\
        --compile off --runs 1 2 --share-seconds 2        # a smoke test on a CPU
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timing import interleaved

from mhgd.engine.optim import build_sgd
from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import MHGD, Distiller
from mhgd.methods.mhgd import MhgdConfig
from mhgd.models import build_model

DATASETS = {"cifar100": (32, 100), "tinyimagenet": (64, 200)}
PAIRS = {"vgg": ("vgg16", "vgg7"), "wrn": ("wrn22_4", "wrn10_4")}
PRECISIONS = {
    "fp32": (None, False),
    "bf16": (torch.bfloat16, False),
    "bf16+cl": (torch.bfloat16, True),
}
STAGES = ["teacher", "mhan", "student", "mhgd", "budget"]
# The paper's method settings (mhgd/conf/method/mhgd.yaml), without omegaconf.
MHGD_SETTINGS = MhgdConfig()  # the paper's: A = 8, beta 1, 20 MHAN epochs
TRAIN_IMAGES = {"cifar100": 50_000, "tinyimagenet": 100_000}
EPOCHS = {"teacher": 200, "student": 100, "mhan": 20, "init": 40}

Step = Callable[[], None]


def _optimised(task: Any) -> Step:
    optimizer = build_sgd(task.trainable_parameters(), 0.01, 0.9, 5e-4)

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        task.train_step(images, labels, epoch=1)
        optimizer.step()

    return step


def stage_steps(dataset: str, pair: str, variant: str, args: argparse.Namespace) -> dict[str, Step]:
    """One training step per stage for this variant, on a batch resident on the device."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    size, classes = DATASETS[dataset]
    autocast, channels_last = PRECISIONS[variant.removesuffix("+compile")]
    runtime = {
        "autocast": autocast,
        "channels_last": channels_last,
        "compile": variant.endswith("+compile"),
    }
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def network(name: str) -> Any:
        model = build_model(name, num_classes=classes, image_size=size, width=args.width)
        return model.to(device, memory_format=memory_format)

    teacher, student = (network(name) for name in PAIRS[pair])
    images = torch.rand(args.batch, 3, size, size, device=device) - 0.5
    labels = torch.randint(0, classes, (args.batch,), device=device)
    teacher_alone = ClassifierTask(teacher, Distiller(None, teacher, None), **runtime)
    student_alone = ClassifierTask(student, Distiller(None, student, None), **runtime)
    method = MHGD(teacher, student, MHGD_SETTINGS).to(device)
    (stage,) = MHGD.pre_stages(MHGD_SETTINGS)
    mhan = method.pre_stage_task(stage, **runtime)
    method.load_pre_stage(stage, mhan.state_dict())
    frozen = network(PAIRS[pair][0]).eval().requires_grad_(False)
    mhgd = ClassifierTask(student, method, frozen, **runtime)
    budget = _budget(student, frozen, runtime)
    steps = {
        "teacher": (teacher_alone, _optimised(teacher_alone)),
        "mhan": (mhan, _optimised(mhan)),
        "student": (student_alone, _optimised(student_alone)),
        "mhgd": (mhgd, _optimised(mhgd)),
        "budget": (mhgd, budget),
    }

    def bound(task: Any, step: Callable) -> Step:
        def call() -> None:
            task.train_mode()
            step(images, labels)

        return call

    return {name: bound(task, step) for name, (task, step) in steps.items()}


def _budget(student: Any, teacher: Any, runtime: dict[str, Any]) -> Callable:
    """The student's forward and two backward passes plus the teacher's forward (no method)."""
    params = list(student.parameters())
    forward = torch.compile(student) if runtime["compile"] else student
    teacher_forward = torch.compile(teacher) if runtime["compile"] else teacher
    precision = runtime["autocast"]

    def step(images: torch.Tensor, labels: torch.Tensor) -> None:
        if runtime["channels_last"]:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(images.device.type, precision, enabled=precision is not None):
            with torch.no_grad():
                teacher_forward(images)
            logits = forward(images)[0]
        ce = torch.nn.functional.cross_entropy(logits.float(), labels)
        grads = torch.autograd.grad(ce, params, retain_graph=True)
        torch.autograd.grad(ce, params)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad

    return step


def peak_memory_gib(step: Step, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**30


def measure(dataset: str, pair: str, variants: list[str], args: argparse.Namespace) -> dict:
    """images/s and peak memory per (variant, stage), all variants interleaved."""
    device = torch.device(args.device)
    steps = {
        (variant, stage): step
        for variant in variants
        for stage, step in stage_steps(dataset, pair, variant, args).items()
    }
    memory = {key: peak_memory_gib(step, device) for key, step in steps.items()}
    seconds = interleaved(
        {f"{v}/{s}": step for (v, s), step in steps.items()},
        rounds=args.rounds,
        steps=args.steps,
        device=device,
    )
    return {
        key: {"images_s": args.batch / seconds[f"{key[0]}/{key[1]}"], "peak_gib": memory[key]}
        for key in steps
    }


def worker(args: argparse.Namespace) -> None:
    """One of K runs sharing the GPU: warm up, wait for the others, train for a while."""
    step = stage_steps(args.dataset, args.pair, args.share_variant, args)["mhgd"]
    for _ in range(3):
        step()
    barrier = Path(args.barrier)
    (barrier / f"ready-{args.worker}").touch()
    while not (barrier / "go").exists():
        time.sleep(0.01)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < args.share_seconds:
        step()
        sync()
        done += 1
    print(json.dumps({"images": done * args.batch, "seconds": time.perf_counter() - start}))


def shared(runs: int, dataset: str, pair: str, args: argparse.Namespace) -> float:
    """Aggregate images/s of ``runs`` processes training the MHGD student on one device."""
    with tempfile.TemporaryDirectory() as barrier:
        command = [sys.executable, __file__, *sys.argv[1:], "--barrier", barrier]
        command += ["--dataset", dataset, "--pair", pair]
        children = [
            subprocess.Popen([*command, "--worker", str(i)], stdout=subprocess.PIPE, text=True)
            for i in range(runs)
        ]
        while len(list(Path(barrier).glob("ready-*"))) < runs:
            if any(child.poll() not in (None, 0) for child in children):
                raise RuntimeError("a sharing worker failed; run it alone to see why")
            time.sleep(0.05)
        (Path(barrier) / "go").touch()
        outputs = [child.communicate()[0] for child in children]
        results = [json.loads(output.strip().splitlines()[-1]) for output in outputs]
    return sum(r["images"] for r in results) / max(r["seconds"] for r in results)


def gpu_hours(rates: dict[str, float], dataset: str, pairs: list[str]) -> dict[str, float]:
    """Table 4 (VGG, A in 1..16, 5 seeds) and Table 1 (all pairs, 7 columns, 5 seeds)."""
    images = TRAIN_IMAGES[dataset]

    def hours(pair: str, stage: str, epochs: int, count: int = 1) -> float:
        return count * epochs * images / rates[f"{pair}/{stage}"] / 3600

    estimates = {}
    if "vgg" in pairs:
        estimates["table4"] = (
            hours("vgg", "teacher", EPOCHS["teacher"])
            + hours("vgg", "mhan", EPOCHS["mhan"], 5)
            + hours("vgg", "student", EPOCHS["student"], 5)
            + hours("vgg", "mhgd", EPOCHS["student"], 25)
        )
    estimates["table1"] = sum(
        hours(pair, "teacher", EPOCHS["teacher"])
        + hours(pair, "student", EPOCHS["student"], 5 * 3)  # alone, FSP's and AB's main stage
        + hours(pair, "budget", EPOCHS["student"], 5)  # soft-logits
        + hours(pair, "budget", EPOCHS["init"], 5 * 2)  # FSP's and AB's init stage
        + hours(pair, "mhgd", EPOCHS["student"], 5 * 3)  # KD-SVD, KD-SVDF, MHGD
        + hours(pair, "mhan", EPOCHS["mhan"])
        for pair in pairs
    )
    return estimates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", default=default_device)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--share-variant", default="bf16+cl")
    parser.add_argument("--share-seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    for hidden in ("--worker", "--barrier", "--dataset", "--pair"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args)
        return
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, batch {args.batch}, width {args.width}")
    variants = [
        p + ("+compile" if c == "on" else "") for c in args.compile for p in args.precisions
    ]
    report: dict[str, Any] = {"device": name, "torch": torch.__version__, "results": {}}
    for dataset in args.datasets:
        rates: dict[str, float] = {}
        for pair in args.pairs:
            figures = measure(dataset, pair, variants, args)
            print(f"\n{dataset} {pair}: images/s (peak GiB)")
            print(f"{'variant':>18} " + " ".join(f"{s:>16}" for s in STAGES) + "  mhgd/budget")
            for variant in variants:
                cells = []
                for stage in STAGES:
                    cell = figures[variant, stage]
                    peak = f"({cell['peak_gib']:.1f})" if cell["peak_gib"] is not None else ""
                    cells.append(f"{cell['images_s']:>9.0f} {peak:>6}")
                rate = {stage: figures[variant, stage]["images_s"] for stage in STAGES}
                ratio = rate["budget"] / rate["mhgd"]
                print(f"{variant:>18} " + " ".join(cells) + f"  x{ratio:.2f}")
                report["results"][f"{dataset}/{pair}/{variant}"] = {
                    stage: figures[variant, stage] for stage in STAGES
                }
            for stage in STAGES:  # the fastest variant of each stage feeds the estimate
                rates[f"{pair}/{stage}"] = max(figures[v, stage]["images_s"] for v in variants)
            aggregate = {runs: shared(runs, dataset, pair, args) for runs in args.runs}
            print(f"{pair} MHGD students sharing one device ({args.share_variant}), images/s: ")
            print("  " + "  ".join(f"{k} runs {v:.0f}" for k, v in aggregate.items()))
            report["results"][f"{dataset}/{pair}/shared"] = aggregate
        packed = max(aggregate.values()) / aggregate[min(aggregate)]
        estimates = gpu_hours(rates, dataset, args.pairs)
        print(f"\n{dataset}: estimated device-hours, fastest variant per stage, 1 run per device")
        print("(FSP/AB init and soft-logits costed as the budget step, KD-SVD/F as MHGD, every")
        print(f" head count as A = 8); with the best packing above, divide by {packed:.2f}")
        for table, value in estimates.items():
            print(f"  {table}: {value:.1f} h (packed: {value / packed:.1f} h)")
        report["results"][f"{dataset}/gpu_hours"] = {**estimates, "packing_gain": packed}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
