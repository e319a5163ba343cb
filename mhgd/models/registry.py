"""The model registry: config names to network builders, filled by the modules of mhgd.models.

A builder takes ``num_classes``, ``image_size`` and ``width`` (plus optional options such as
``batch_norm``) and returns a SensedModel; a module registers its own with
``@MODELS.register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable

from mhgd.models.base import SensedModel
from mhgd.registry import Registry

MODELS: Registry[Callable[..., SensedModel]] = Registry(
    "model",
    "mhgd.models",
    'add a builder to a module of mhgd/models/ with @MODELS.register("<name>") and '
    "mhgd/conf/model/<name>.yaml; see README 'Extending'",
)
