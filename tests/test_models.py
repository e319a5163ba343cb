"""The networks: sensing shapes against method.md section 7, pairings, width scaling, gradients,
parameter counts against published or hand-derived figures, and He init statistics."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch
from torch import nn

import mhgd  # noqa: F401  (installs the torchvision import fix before anything else)
from mhgd.models import MODEL_NAMES, SensedModel, SensingPoint, build_model
from mhgd.models.wrn import WideResNet

CLASSES = {32: 100, 64: 200}

EXPECTED_SENSING = {  # (channels, size) per point, method.md section 7 and the VGG decision
    32: {
        "vgg16": [(64, 16), (128, 8), (256, 4), (512, 4), (512, 2)],
        "vgg7": [(64, 16), (128, 8), (256, 4), (512, 4), (512, 2)],
        "wrn22_4": [(64, 32), (128, 16), (256, 8)],
        "wrn10_4": [(64, 32), (128, 16), (256, 8)],
        "resnet": [(64, 32), (128, 16), (256, 8)],
        "mobilenet": [(64, 32), (128, 16), (256, 8)],
        "modified_vgg": [(64, 32), (128, 16), (256, 8)],
    },
    64: {
        "vgg16": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)],
        "vgg7": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 2)],
        "wrn22_4": [(64, 32), (128, 16), (256, 8)],
        "wrn10_4": [(64, 32), (128, 16), (256, 8)],
        "resnet": [(64, 32), (128, 16), (256, 8)],
        "mobilenet": [(64, 32), (128, 16), (256, 8)],
        "modified_vgg": [(64, 32), (128, 16), (256, 8)],
    },
}

PAIRS = [  # (teacher, student) of Tables 1-3
    ("vgg16", "vgg7"),
    ("wrn22_4", "wrn10_4"),
    ("wrn22_4", "resnet"),
    ("wrn22_4", "mobilenet"),
    ("wrn22_4", "modified_vgg"),
]

NARROW = 0.25


def _build(name: str, image_size: int = 32, **options) -> SensedModel:
    torch.manual_seed(0)
    return build_model(name, num_classes=CLASSES[image_size], image_size=image_size, **options)


@functools.cache
def _paper_model(name: str, image_size: int) -> SensedModel:
    """A full-width model in eval mode, built once and shared by the tests that only read it."""
    return _build(name, image_size).eval()


def _run(model: SensedModel, image_size: int, batch: int) -> tuple[torch.Tensor, list]:
    torch.manual_seed(1)
    return model(torch.randn(batch, 3, image_size, image_size))


def _points(model: SensedModel) -> list[tuple[int, int]]:
    return [(point.channels, point.size) for point in model.sensing]


def _shapes(feats: list[torch.Tensor]) -> list[tuple[int, int]]:
    shapes = []
    for feat in feats:
        _, channels, height, width = feat.shape
        assert height == width
        shapes.append((channels, height))
    return shapes


def test_registry_lists_the_paper_networks():
    assert set(MODEL_NAMES) == {
        "vgg16",
        "vgg7",
        "wrn22_4",
        "wrn10_4",
        "resnet",
        "mobilenet",
        "modified_vgg",
    }
    assert set(EXPECTED_SENSING[32]) == set(EXPECTED_SENSING[64]) == set(MODEL_NAMES)


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_full_width_sensing_matches_the_method(name, image_size):
    model = _paper_model(name, image_size)
    with torch.no_grad():
        logits, feats = _run(model, image_size, batch=1)
    assert all(isinstance(point, SensingPoint) for point in model.sensing)
    assert _points(model) == EXPECTED_SENSING[image_size][name]
    assert _shapes(feats) == EXPECTED_SENSING[image_size][name]
    assert logits.shape == (1, CLASSES[image_size])
    assert all((feat >= 0).all() for feat in feats), "sensed maps are post-ReLU"


@pytest.mark.parametrize("width", [0.01, 0.3])
@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_narrow_models_return_what_they_declare(name, image_size, width):
    model = _build(name, image_size, width=width).eval()
    with torch.no_grad():
        logits, feats = _run(model, image_size, batch=2)
    expected = [
        (max(1, round(channels * width)), size)
        for channels, size in EXPECTED_SENSING[image_size][name]
    ]
    assert _points(model) == expected
    assert _shapes(feats) == expected
    assert logits.shape == (2, CLASSES[image_size])


def test_width_scales_the_vgg_hidden_layers_too():
    model = _build("vgg16", width=0.01)
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [
        (5 * 2 * 2, 10),
        (10, 10),
        (10, 100),
    ]


@pytest.mark.parametrize("width", [1.0, NARROW])
@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize(("teacher", "student"), PAIRS)
def test_paper_pairs_have_matching_sensing_points(teacher, student, image_size, width):
    with torch.device("meta"):  # declarations only: no weights needed
        teacher_model = _build(teacher, image_size, width=width)
        student_model = _build(student, image_size, width=width)
    assert [p.channels for p in teacher_model.sensing] == [
        p.channels for p in student_model.sensing
    ]
    assert teacher_model.sensing == student_model.sensing


def test_unknown_model_names_every_choice():
    with pytest.raises(ValueError, match="unknown model 'vgg19'") as error:
        build_model("vgg19", num_classes=100, image_size=32)
    assert all(name in str(error.value) for name in MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("image_size", [28, 224])
def test_unsupported_image_size_names_the_valid_ones(name, image_size):
    with pytest.raises(ValueError, match=r"image_size must be one of \[32, 64\]"):
        build_model(name, num_classes=10, image_size=image_size)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 0}, "num_classes must be a positive integer"),
        ({"num_classes": 2.5}, "num_classes must be a positive integer"),
        ({"width": 0.0}, "width must be a positive"),
        ({"width": float("nan")}, "width must be a positive"),
    ],
)
def test_bad_sizes_are_rejected(options, message):
    arguments = {"num_classes": 10, "image_size": 32} | options
    with pytest.raises(ValueError, match=message):
        build_model("resnet", **arguments)


def test_wrn_depth_must_fit_the_layout():
    with pytest.raises(ValueError, match=r"6n \+ 4"):
        WideResNet(12, 4, num_classes=10, image_size=32)


@pytest.mark.parametrize(
    ("name", "batch_norm", "norm_layers"),
    [
        ("vgg16", None, 0),
        ("vgg16", True, 13),
        ("vgg7", True, 5),
        ("resnet", None, 1 + 3 * 3),
        ("resnet", False, 0),
        ("wrn10_4", None, 2 * 3 + 1),
        ("mobilenet", None, 1 + 5 * 2),
        ("modified_vgg", None, 7),
        ("modified_vgg", False, 0),
    ],
)
def test_batch_norm_flag(name, batch_norm, norm_layers):
    model = _build(name, width=NARROW, batch_norm=batch_norm)
    modules = list(model.modules())
    assert sum(isinstance(module, nn.BatchNorm2d) for module in modules) == norm_layers
    convs = [module for module in modules if isinstance(module, nn.Conv2d)]
    assert all((conv.bias is None) == (norm_layers > 0) for conv in convs), (
        "a conv followed by batch norm needs no bias; one without it does"
    )


GRADIENT_CASES = [(name, None) for name in MODEL_NAMES] + [
    ("vgg16", True),
    ("wrn10_4", False),
    ("resnet", False),
    ("mobilenet", False),
    ("modified_vgg", False),
]


@pytest.mark.parametrize(("name", "batch_norm"), GRADIENT_CASES)
def test_backward_reaches_every_parameter(name, batch_norm):
    model = _build(name, width=NARROW, batch_norm=batch_norm).train()
    logits, _ = _run(model, 32, batch=4)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    unreached = [
        param_name
        for param_name, param in model.named_parameters()
        if param.grad is None or not param.grad.abs().sum() > 0
    ]
    assert not unreached
    assert all(torch.isfinite(param.grad).all() for param in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_sensed_map_is_in_the_graph(name):
    """The student's transfer gradient must flow from each sensed map back to the input conv."""
    model = _build(name, width=NARROW).train()
    first_conv = next(module for module in model.modules() if isinstance(module, nn.Conv2d))
    _, feats = _run(model, 32, batch=4)
    for feat in feats:
        (grad,) = torch.autograd.grad(feat.square().mean(), first_conv.weight, retain_graph=True)
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_channels_last_inputs_give_the_same_outputs(name):
    model = _build(name, width=NARROW).eval()
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(images)
        logits_cl, feats_cl = model(images.to(memory_format=torch.channels_last))
    # Kernels for the two layouts sum in different orders: float32 rounding, not layout bugs.
    torch.testing.assert_close(logits_cl, logits, rtol=1e-4, atol=1e-4)
    for feat_cl, feat in zip(feats_cl, feats, strict=True):
        torch.testing.assert_close(feat_cl, feat, rtol=1e-4, atol=1e-4)


def _count(model: nn.Module) -> int:
    return sum(param.numel() for param in model.parameters())


# Hand-derived parameter counts: convs without bias when batch norm follows.
def _conv(c_in: int, c_out: int, kernel: int = 3, *, bias: bool = False) -> int:
    return c_in * c_out * kernel * kernel + (c_out if bias else 0)


def _bn(channels: int) -> int:
    return 2 * channels


def _fc(c_in: int, c_out: int) -> int:
    return c_in * c_out + c_out


def _conv_bn(c_in: int, c_out: int) -> int:
    return _conv(c_in, c_out) + _bn(c_out)


@pytest.mark.parametrize(
    ("depth", "widen_factor", "published_millions"),
    [(16, 4, 2.7), (40, 4, 8.9), (16, 8, 11.0), (22, 8, 17.2), (28, 10, 36.5), (40, 10, 55.8)],
)
def test_wrn_parameter_counts_match_the_wrn_paper(depth, widen_factor, published_millions):
    """Zagoruyko & Komodakis (2016) give these CIFAR-10 sizes, rounded to 0.1M."""
    with torch.device("meta"):
        model = WideResNet(depth, widen_factor, num_classes=10, image_size=32)
    assert abs(_count(model) / 1e6 - published_millions) <= 0.05


def _wrn_count(blocks_per_stage: int, num_classes: int) -> int:
    total, c_in = _conv(3, 16), 16
    for c_out in (64, 128, 256):
        for index in range(blocks_per_stage):
            projection = _conv(c_in, c_out, 1) if index == 0 else 0
            total += _bn(c_in) + _conv(c_in, c_out) + _bn(c_out) + _conv(c_out, c_out) + projection
            c_in = c_out
    return total + _bn(256) + _fc(256, num_classes)


def _resnet_count(num_classes: int) -> int:
    total, c_in = _conv_bn(3, 16), 16
    for c_out in (64, 128, 256):
        total += _conv_bn(c_in, c_out) + _conv_bn(c_out, c_out) + _conv(c_in, c_out, 1) + _bn(c_out)
        c_in = c_out
    return total + _fc(256, num_classes)


def _mobilenet_count(num_classes: int) -> int:
    total, c_in = _conv_bn(3, 16), 16
    for c_out in (64, 128, 128, 256, 256):
        total += 9 * c_in + _bn(c_in) + _conv(c_in, c_out, 1) + _bn(c_out)
        c_in = c_out
    return total + _fc(256, num_classes)


def _modified_vgg_count(num_classes: int) -> int:
    channels = (3, 16, 64, 64, 128, 128, 256, 256)
    convs = sum(_conv_bn(c_in, c_out) for c_in, c_out in itertools.pairwise(channels))
    return convs + _fc(256, num_classes)


VGG16_FEATURES = 14_714_688
"""torchvision's VGG16 conv layers (with biases): its 138,357,544 parameters minus its FC ones."""


def _vgg7_features() -> int:
    channels = (3, 64, 128, 256, 512, 512)
    return sum(_conv(c_in, c_out, bias=True) for c_in, c_out in itertools.pairwise(channels))


@pytest.mark.parametrize("image_size", [32, 64])
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vgg16", lambda k: VGG16_FEATURES + _fc(2048, 1024) + _fc(1024, 1024) + _fc(1024, k)),
        ("vgg7", lambda k: _vgg7_features() + _fc(2048, 1024) + _fc(1024, k)),
        ("wrn22_4", lambda k: _wrn_count(3, k)),
        ("wrn10_4", lambda k: _wrn_count(1, k)),
        ("resnet", _resnet_count),
        ("mobilenet", _mobilenet_count),
        ("modified_vgg", _modified_vgg_count),
    ],
)
def test_parameter_counts(name, expected, image_size):
    with torch.device("meta"):
        model = build_model(name, num_classes=CLASSES[image_size], image_size=image_size)
    assert _count(model) == expected(CLASSES[image_size])


def _relative_std_error(weight: torch.Tensor, fan_in: int) -> float:
    return abs(weight.std().item() / math.sqrt(2.0 / fan_in) - 1.0)


def test_he_init_uses_the_fan_in():
    model = _paper_model("wrn22_4", 32)
    opener = model.blocks[6].conv1.weight  # stage 3's first conv: 128 -> 256, fan-out is double
    assert opener.shape == (256, 128, 3, 3)
    assert _relative_std_error(opener, 128 * 9) < 0.01
    assert abs(opener.mean().item()) < 1e-3

    vgg = _paper_model("vgg16", 32)
    linears = [module for module in vgg.modules() if isinstance(module, nn.Linear)]
    assert linears[0].weight.shape == (1024, 2048)
    assert _relative_std_error(linears[0].weight, 2048) < 0.01
    assert linears[-1].weight.shape == (100, 1024)
    assert _relative_std_error(linears[-1].weight, 1024) < 0.03


def test_depthwise_filters_use_their_per_group_fan_in():
    """A depthwise 3x3 filter sees 9 inputs, so its std is sqrt(2 / 9)."""
    model = _paper_model("mobilenet", 32)
    depthwise = [
        module.weight.flatten()
        for module in model.modules()
        if isinstance(module, nn.Conv2d) and module.groups > 1
    ]
    assert len(depthwise) == 5
    assert _relative_std_error(torch.cat(depthwise), 9) < 0.03


def test_biases_start_at_zero_and_batch_norm_as_identity():
    plain = _build("vgg16")
    biased = [
        module.bias for module in plain.modules() if isinstance(module, nn.Conv2d | nn.Linear)
    ]
    assert biased and all((bias == 0).all() for bias in biased)

    normed = _build("vgg7", batch_norm=True)
    norms = [module for module in normed.modules() if isinstance(module, nn.BatchNorm2d)]
    assert all((bn.weight == 1).all() and (bn.bias == 0).all() for bn in norms)


def test_fan_out_init_is_an_option():
    """The authors' init (code): He normal over the fan-out, for convs and linear layers."""
    model = build_model("wrn22_4", num_classes=100, image_size=32, init="fan_out")
    opener = model.blocks[6].conv1.weight  # 128 -> 256: the fan-out is twice the fan-in
    assert _relative_std_error(opener, 256 * 9) < 0.01
    vgg = build_model("vgg16", num_classes=100, image_size=32, init="fan_out")
    linears = [module for module in vgg.modules() if isinstance(module, nn.Linear)]
    assert _relative_std_error(linears[0].weight, 1024) < 0.01
    assert _relative_std_error(linears[-1].weight, 100) < 0.03
    fan_in = build_model("vgg16", num_classes=100, image_size=32, init="fan_in")
    first = next(m for m in fan_in.modules() if isinstance(m, nn.Linear))
    assert _relative_std_error(first.weight, 2048) < 0.01
    with pytest.raises(ValueError, match="fan_in"):
        build_model("vgg7", num_classes=10, image_size=32, init="xavier")


def test_the_paper_experiments_default_to_fan_out_and_init_is_in_the_identity(tmp_path):
    from mhgd.stages import teacher_spec
    from tests.helpers import compose_config

    paper = compose_config("experiment=table1/vgg_mhgd")
    assert paper.teacher.init == paper.student.init == "fan_out"
    assert compose_config("experiment=quickstart").student.init == "fan_in"
    keys = {
        mode: teacher_spec(compose_config(f"teacher.init={mode}"), 0).key
        for mode in ("fan_in", "fan_out")
    }
    assert keys["fan_in"] != keys["fan_out"]
