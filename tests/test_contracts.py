"""The contracts every registered method, model and data set keeps, tested over the registries.

A new method, model or data set is found by discovery and lands in these parametrizations with
no edit here: its config composes and validates (pairing included), it takes one finite training
step (its pre-stages too), its state survives a round trip, and what it reports is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mhgd.config import CONF_DIR
from mhgd.data import DATASETS, load_dataset
from mhgd.engine.tasks import ClassifierTask
from mhgd.methods import METHODS
from mhgd.models import MODELS, build_model
from mhgd.pipeline import validate
from tests.helpers import compose_config, tiny

NUM_CLASSES, IMAGE_SIZE, BATCH = 10, 32, 16


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return images, torch.arange(BATCH) % NUM_CLASSES


def finite(stats: dict[str, float]) -> bool:
    return all(torch.isfinite(torch.tensor(float(v))) for v in stats.values())


def step(task: ClassifierTask, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """One optimiser step as the loop takes it (gradients from the task, then SGD)."""
    optimizer = torch.optim.SGD(task.trainable_parameters(), lr=0.01)
    task.train_mode()
    optimizer.zero_grad(set_to_none=True)
    stats = task.train_step(images, labels, 0)
    optimizer.step()
    return stats


# -- methods ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name: str, tmp_path: Path) -> None:
    assert (CONF_DIR / "method" / f"{name}.yaml").is_file(), "a method needs its config file"
    cfg = compose_config(*tiny(tmp_path, f"method={name}"))
    validate(cfg)  # the typed schema and the teacher/student pairing
    method = METHODS.get(name)
    json.dumps(method.describe(cfg.method))

    torch.manual_seed(0)
    teacher = build_model("vgg16", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, width=0.125)
    teacher.eval().requires_grad_(False)

    def distiller() -> tuple[ClassifierTask, torch.nn.Module]:
        student = build_model("vgg7", num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, width=0.125)
        uses = method.needs_teacher(cfg.method)
        made = method(teacher if uses else None, student, cfg.method)
        return ClassifierTask(student, made, teacher if uses else None), made

    task, made = distiller()
    images, labels = batch()
    for stage in method.pre_stages(cfg.method):
        pre = made.pre_stage_task(stage)
        optimizer = torch.optim.SGD(pre.trainable_parameters(), lr=0.01)
        pre.train_mode()
        assert finite(pre.train_step(images, labels, 0)), stage.name
        optimizer.step()
        made.load_pre_stage(stage, pre.state_dict())
    assert finite(step(task, images, labels))

    copy, _ = distiller()
    copy.load_state_dict(task.state_dict())
    for key, value in task.state_dict()["method"].items():
        assert torch.equal(value, copy.state_dict()["method"][key]), key
    task.model.eval()
    copy.model.eval()
    assert torch.equal(task.model(images)[0], copy.model(images)[0])


# -- models -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS.names())
def test_model_contract(name: str, tmp_path: Path) -> None:
    assert (CONF_DIR / "model" / f"{name}.yaml").is_file(), "a model needs its config file"
    cfg = compose_config(*tiny(tmp_path, f"model@student={name}", "model@teacher=vgg16"))
    assert cfg.student.name == name
    validate(cfg)

    torch.manual_seed(0)
    model = build_model(name, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, width=0.125)
    images, labels = batch()
    logits, feats = model(images)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert [(f.shape[1], f.shape[2], f.shape[3]) for f in feats] == [
        (p.channels, p.size, p.size) for p in model.sensing
    ]
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    copy = build_model(name, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE, width=0.125)
    copy.load_state_dict(model.state_dict())
    model.eval()
    copy.eval()
    assert torch.equal(model(images)[0], copy(images)[0])


# -- data sets ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_contract(name: str, tmp_path: Path) -> None:
    assert (CONF_DIR / "dataset" / f"{name}.yaml").is_file(), "a data set needs its config file"
    cfg = compose_config(*tiny(tmp_path, f"dataset={name}"))
    validate(cfg)
    source = DATASETS.get(name)
    assert source.spec.name == name and source.spec.num_classes >= 2
    assert source.tune_val_size > 0 and source.spec.pad >= 0

    try:  # a bundled data set loads; one on disk says which file it misses
        train, test, spec = load_dataset(name, tmp_path / "empty")
    except FileNotFoundError as missing:
        assert str(tmp_path / "empty") in str(missing)
        return
    for images in (train.images, test.images):
        assert images.dtype == torch.uint8
        assert images.shape[1:] == (3, spec.image_size, spec.image_size)
    for labels in (train.labels, test.labels):
        assert int(labels.min()) >= 0 and int(labels.max()) < spec.num_classes


# -- the registry mechanism ---------------------------------------------------------------------
def test_a_new_module_in_the_package_is_found_without_an_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mhgd.registry import Registry

    package = tmp_path / "plugins_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "registry.py").write_text(
        "from mhgd.registry import Registry\nTHINGS = Registry('thing', 'plugins_pkg', 'x')\n"
    )
    (package / "extra.py").write_text(
        "from plugins_pkg.registry import THINGS\n\n@THINGS.register('new')\ndef new(): ...\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import plugins_pkg.registry

    things: Registry = plugins_pkg.registry.THINGS
    assert things.names() == ("new",)


def test_an_unknown_method_lists_the_choices_and_how_to_add_one() -> None:
    from mhgd.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        METHODS.get("distil9000")
    message = str(raised.value)
    assert all(name in message for name in METHODS.names())
    assert "mhgd/methods/<name>.py" in message and "mhgd/conf/method/<name>.yaml" in message
