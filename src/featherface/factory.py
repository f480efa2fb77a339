"""Model creation: build a registered architecture and load its weights."""

from __future__ import annotations

import os

from torch import nn

from featherface.models.registry import resolve_name
from featherface.weights import load_state_dict_strict, read_weights, resolve_pretrained


def create_model(
    name: str,
    pretrained: bool = False,
    checkpoint_path: str | os.PathLike | None = None,
    **kwargs: object,
) -> nn.Module:
    """Build ``arch`` or ``arch.tag`` (e.g. ``"featherface_v1.widerface"``).

    Args:
        name: a name from :func:`featherface.list_models`.
        pretrained: load the registered weights (the default tag when ``name`` has none): the
            copy shipped in the package, else the Hugging Face cache, else a download of the
            pinned revision; the sha256 is verified first.
        checkpoint_path: load this file instead (``.safetensors``, or a legacy ``.pth``
            converted through the documented key mapping), or the output folder of a training
            run (its ``model.safetensors``; the ``arch`` in its ``config.json`` must match).
            Takes precedence over ``pretrained``.
        kwargs: forwarded to the architecture builder.

    Returns:
        the model in eval mode when weights were loaded, with ``pretrained_cfg`` (the
        :class:`~featherface.models.registry.WeightsCfg` of the tag, or ``None``) attached.
    """
    model_cfg, tag = resolve_name(name)
    model = model_cfg.builder(**kwargs)
    weights_cfg = model_cfg.weights_cfg(tag)
    if checkpoint_path is not None:
        state_dict = read_weights(checkpoint_path, model_cfg)
        load_state_dict_strict(model, state_dict, str(checkpoint_path))
        model.eval()
    elif pretrained:
        path = resolve_pretrained(name)
        load_state_dict_strict(model, read_weights(path, model_cfg), f"{name} ({path})")
        model.eval()
    model.pretrained_cfg = weights_cfg
    model.arch = model_cfg.arch
    return model


def featherface_v1(
    pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None, **kwargs: object
) -> nn.Module:
    """FeatherFace V1 (592,371 parameters; MobileNetV1-0.25, CBAM, BiFPN, deformable SSH)."""
    return create_model("featherface_v1", pretrained=pretrained, checkpoint_path=checkpoint_path, **kwargs)


def featherface_v2(
    pretrained: bool = False, checkpoint_path: str | os.PathLike | None = None, **kwargs: object
) -> nn.Module:
    """FeatherFace V2 (~0.26M parameters; the knowledge-distilled student of V1)."""
    return create_model("featherface_v2", pretrained=pretrained, checkpoint_path=checkpoint_path, **kwargs)
