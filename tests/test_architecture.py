"""Facts about the code any reader can check: how its modules import each other, and what a
light import costs. The import graph is read from the source (ast), every import statement
counted, the ones inside functions too.

The layers (a module may import its own package and the layers below it, never above):

    0  foundation: mhgd, _compat, errors, secrets, registry, config, files, records, tracking
    1  mhgd.data, mhgd.models          (siblings: neither imports the other)
    2  mhgd.methods
    3  mhgd.engine
    4  mhgd.pipeline, mhgd.stages, mhgd.slots, mhgd.stage_run   (orchestration)
    5  mhgd.cluster                    (the cluster layer: planning, executors, job bases)
    6  mhgd.train, mhgd.sweep, mhgd.sweeps, hydra_plugins   (entry points)

and the report (mhgd.report) reads only the foundation: run records and W&B, never the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.slurm_support import REPO_ROOT

LAYERS: dict[str, int] = {
    "mhgd": 0,
    "mhgd._compat": 0,
    "mhgd.errors": 0,
    "mhgd.secrets": 0,
    "mhgd.registry": 0,
    "mhgd.config": 0,
    "mhgd.files": 0,
    "mhgd.records": 0,
    "mhgd.tracking": 0,
    "mhgd.conf": 0,
    "mhgd.data": 1,
    "mhgd.models": 1,
    "mhgd.methods": 2,
    "mhgd.engine": 3,
    "mhgd.pipeline": 4,
    "mhgd.stages": 4,
    "mhgd.slots": 4,
    "mhgd.stage_run": 4,
    "mhgd.cluster": 5,
    "mhgd.train": 6,
    "mhgd.sweep": 6,
    "mhgd.sweeps": 6,
    "hydra_plugins": 6,
}
REPORT = "mhgd.report"
ENTRY_POINT = "mhgd.train"


def module_names() -> dict[str, Path]:
    found = {}
    for root in ("mhgd", "hydra_plugins"):
        for path in sorted((REPO_ROOT / root).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = module_names()


def imports_of(module: str) -> set[str]:
    """The project modules ``module`` imports (``from a import b`` is a.b when that is one)."""
    targets = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
    return targets


GRAPH = {module: imports_of(module) for module in MODULES}


def layer_of(module: str) -> tuple[str, int]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return best, LAYERS[best]


# Parts of one layer that may import each other; other parts of a layer stay independent
# (the data sets and the models; the train, sweep and launcher entry points).
UNITS = {
    "mhgd.stages": "mhgd.pipeline",
    "mhgd.slots": "mhgd.pipeline",
    "mhgd.stage_run": "mhgd.pipeline",
    "mhgd.sweep": "mhgd.sweeps",
}


def unit_of(module: str) -> str:
    prefix, _ = layer_of(module)
    return UNITS.get(prefix, prefix)


def test_every_module_has_a_layer() -> None:
    unplaced = [
        m
        for m in MODULES
        if not m.startswith(REPORT) and not any(m == p or m.startswith(p + ".") for p in LAYERS)
    ]
    assert not unplaced, f"add these modules to LAYERS in {Path(__file__).name}: {unplaced}"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for module, targets in GRAPH.items():
        if module.startswith(REPORT):
            continue
        _, rank = layer_of(module)
        for target in targets:
            if target.startswith(REPORT):
                wrong.append(f"{module} -> {target} (only readers import the report)")
                continue
            _, target_rank = layer_of(target)
            same_unit = unit_of(target) == unit_of(module)
            if target_rank > rank or (target_rank == rank and rank > 0 and not same_unit):
                wrong.append(f"{module} (layer {rank}) -> {target} (layer {target_rank})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_the_report_reads_only_records_and_wandb() -> None:
    wrong = [
        f"{module} -> {target}"
        for module, targets in GRAPH.items()
        if module.startswith(REPORT)
        for target in targets
        if not target.startswith(REPORT) and layer_of(target)[1] > 0
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_the_train_entry_point() -> None:
    importers = [m for m, targets in GRAPH.items() if ENTRY_POINT in targets]
    assert not importers


def test_there_are_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize("module", ["mhgd.train", "mhgd.config", "mhgd.report", "mhgd.sweeps.spec"])
def test_light_imports_do_not_load_torch(module: str) -> None:
    """The CLI's --help and tab completion, the report and the notebooks do not pay for torch."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
