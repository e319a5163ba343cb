"""benchmarks/bench_gpu.py runs on a machine with nothing but torch (issue 11 item 6).

A ``sitecustomize`` module on PYTHONPATH makes every import of Hydra, omegaconf, submitit,
Optuna, W&B, tqdm, torchvision and scikit-learn fail, in the benchmark's process and in the
processes it starts (its runs sharing the device); the benchmark then runs at toy sizes on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOT_ON_A_BARE_MACHINE = [
    "hydra",
    "hydra_plugins",
    "omegaconf",
    "submitit",
    "optuna",
    "wandb",
    "tqdm",
    "torchvision",
    "sklearn",
]
BLOCKER = f"""
import sys
from importlib.machinery import ModuleSpec

BLOCKED = {set(NOT_ON_A_BARE_MACHINE)!r}


class NotInstalled:
    \"\"\"Imports of a blocked package fail; a probe (find_spec) sees no file to load.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return ModuleSpec(name, self)  # origin None: torch's probes skip it
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {{spec.name!r}} (blocked: a bare machine)")

    def exec_module(self, module):
        raise AssertionError("unreachable")


sys.meta_path.insert(0, NotInstalled())
"""


def bare_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_the_blocker_blocks(tmp_path: Path) -> None:
    for name in ("omegaconf", "tqdm", "mhgd.engine.loop"):
        blocked = bare_python(tmp_path, "-c", f"import {name}")
        assert blocked.returncode != 0 and "blocked: a bare machine" in blocked.stderr


def test_the_benchmark_imports_only_torch_and_the_package(tmp_path: Path) -> None:
    modules = "mhgd.models, mhgd.methods, mhgd.engine.tasks, mhgd.engine.optim"
    imported = bare_python(tmp_path, "-c", f"import {modules}")
    assert imported.returncode == 0, imported.stderr


@pytest.mark.slow
def test_the_benchmark_runs_at_toy_sizes_on_cpu(tmp_path: Path) -> None:
    figures = tmp_path / "figures.json"
    ran = bare_python(
        tmp_path,
        "benchmarks/bench_gpu.py",
        *("--device", "cpu", "--width", "0.125", "--batch", "4", "--datasets", "cifar100"),
        *("--pairs", "vgg", "--precisions", "fp32", "bf16", "--compile", "off"),
        *("--rounds", "1", "--steps", "1", "--runs", "1", "2", "--share-seconds", "0.5"),
        *("--json", str(figures)),
    )
    assert ran.returncode == 0, ran.stderr
    assert "mhgd/budget" in ran.stdout and "table4" in ran.stdout
    results = json.loads(figures.read_text())["results"]
    for variant in ("fp32", "bf16"):
        stages = results[f"cifar100/vgg/{variant}"]
        assert set(stages) == {"teacher", "mhan", "student", "mhgd", "budget"}
        assert all(stage["images_s"] > 0 for stage in stages.values())
    assert set(results["cifar100/vgg/shared"]) == {"1", "2"}
    assert results["cifar100/gpu_hours"]["table4"] > 0
