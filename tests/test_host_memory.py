"""CPU training keeps its freed heap instead of page-faulting it in again every step."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import mhgd.pipeline
from mhgd.pipeline import prepare
from tests.helpers import compose_config, tiny

# Real training steps of a full-width WRN-10-4 at batch 32 (16 MiB activations), in a fresh
# process each: the minor page faults per step after two warm-up steps.
FAULTS_PER_STEP = """
import resource, sys
import torch
import torch.nn.functional as F
from mhgd.engine.host_memory import keep_freed_host_memory
from mhgd.models import build_model

if sys.argv[1] == "keep":
    assert keep_freed_host_memory()
torch.manual_seed(0)
model = build_model("wrn10_4", num_classes=10, image_size=32)
images, labels = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))

def step():
    F.cross_entropy(model(images)[0], labels).backward()

for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def _faults_per_step(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_STEP, mode],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")
def test_kept_heap_removes_the_page_faults_of_every_step() -> None:
    default, kept = _faults_per_step("default"), _faults_per_step("keep")
    assert default > 4000, f"the scenario no longer frees its heap top: {default} faults/step"
    assert kept * 10 < default, (default, kept)


def test_a_cpu_job_keeps_its_freed_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(mhgd.pipeline, "keep_freed_host_memory", lambda: calls.append(True))
    prepare(compose_config(*tiny(tmp_path)))
    assert calls == [True]
