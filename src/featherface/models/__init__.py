"""Architectures and the model registry (no file or network I/O here)."""

from featherface.models import featherface as _featherface  # noqa: F401  (registers the models)
from featherface.models.featherface import FeatherFace, build_featherface_v1, build_featherface_v2
from featherface.models.registry import (
    InputCfg,
    ModelCfg,
    PriorCfg,
    WeightsCfg,
    get_model_cfg,
    list_models,
    register_model,
)

__all__ = [
    "FeatherFace",
    "InputCfg",
    "ModelCfg",
    "PriorCfg",
    "WeightsCfg",
    "build_featherface_v1",
    "build_featherface_v2",
    "get_model_cfg",
    "list_models",
    "register_model",
]
