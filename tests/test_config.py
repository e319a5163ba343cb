"""Every experiment composes and validates; bad configs fail before any compute, helpfully."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import MissingConfigException

from mhgd.config import CONF_DIR, MAX_DIRNAME, dirname
from mhgd.errors import ConfigError
from mhgd.methods import require_same_channels
from mhgd.models import build_model
from mhgd.pipeline import prepare, validate
from tests.helpers import compose_config

EXPERIMENTS = sorted(
    str(path.relative_to(CONF_DIR / "experiment").with_suffix(""))
    for path in (CONF_DIR / "experiment").rglob("*.yaml")
)


def test_there_is_an_experiment_for_every_table() -> None:
    assert "quickstart" in EXPERIMENTS
    for table in ("table1", "table2", "table3", "table4"):
        assert any(name.startswith(table + "/") for name in EXPERIMENTS), table


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_validates(experiment: str) -> None:
    cfg = compose_config(f"experiment={experiment}")
    assert cfg.name and cfg.name != "default"
    validate(cfg)


def test_unknown_model_name_is_a_config_error() -> None:
    cfg = compose_config("student.name=vgg99")
    with pytest.raises(ConfigError, match=r"unknown model 'vgg99'.*vgg7"):
        validate(cfg)


def test_unknown_model_group_option_lists_the_choices() -> None:
    with pytest.raises(MissingConfigException, match="vgg99"):
        compose_config("model@student=vgg99")


def test_unknown_method_and_stage_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        validate(compose_config("method.name=nope"))
    with pytest.raises(ConfigError, match="stage=mentor: choose one of teacher, student"):
        validate(compose_config("stage=mentor"))


def test_missing_teacher_checkpoint_is_a_config_error(tmp_path: Path) -> None:
    cfg = compose_config(f"teacher_checkpoint={tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="nowhere"):
        validate(cfg)


def test_missing_cifar_files_name_the_expected_path(tmp_path: Path) -> None:
    cfg = compose_config("dataset=cifar100", f"paths.data={tmp_path}", "runtime.device=cpu")
    with pytest.raises(ConfigError, match="cifar-100-python") as info:
        prepare(cfg)
    assert str(tmp_path) in str(info.value)


def test_channel_mismatch_names_both_channel_lists() -> None:
    teacher = build_model("wrn22_4", num_classes=100, image_size=32, width=0.25)
    student = build_model("vgg7", num_classes=100, image_size=32, width=0.25)
    with pytest.raises(ConfigError, match=r"\[16, 32, 64\].*\[16, 32, 64, 128, 128\]") as info:
        require_same_channels("kdsvd", teacher.sensing, student.sensing)
    assert "adapter" not in str(info.value)


def test_run_folder_names_are_stable_and_short() -> None:
    assert dirname("") == "default"
    assert dirname("seed=1,teacher_checkpoint=/a/b") == "seed=1,teacher_checkpoint=_a_b"
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    assert len(dirname(long)) == MAX_DIRNAME
    assert dirname(long) == dirname(long)
    assert dirname(long) != dirname(long + ",one=more")
