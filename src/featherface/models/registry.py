"""Model registry: ``arch`` and ``arch.tag`` names, their builders and weight configs."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from torch import nn


@dataclass(frozen=True)
class InputCfg:
    """How images must be prepared: channel order, per-channel mean and std (0–255 scale)."""

    color_order: str = "bgr"
    mean: tuple[float, float, float] = (104.0, 117.0, 123.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class PriorCfg:
    """Prior (anchor) layout: min sizes per level in pixels, level strides and box variances."""

    min_sizes: tuple[tuple[int, ...], ...] = ((16, 32), (64, 128), (256, 512))
    steps: tuple[int, ...] = (8, 16, 32)
    variances: tuple[float, float] = (0.1, 0.2)


@dataclass(frozen=True)
class WeightsCfg:
    """Everything needed to fetch, verify and use one set of pretrained weights.

    ``metrics`` maps a benchmark name to its numbers and a ``protocol`` string describing how
    they were measured.
    """

    tag: str
    num_params: int
    license: str
    source: str
    hf_hub_id: str | None = None
    filename: str = "model.safetensors"
    revision: str | None = None
    sha256: str | None = None
    package_file: str | None = None
    input: InputCfg = field(default_factory=InputCfg)
    priors: PriorCfg = field(default_factory=PriorCfg)
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    eval_score_threshold: float = 0.02
    metrics: Mapping[str, Mapping[str, float | str]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class ModelCfg:
    """An architecture: its builder, parameter count and the weight sets published for it."""

    arch: str
    builder: Callable[[], nn.Module]
    num_params: int
    description: str
    weights: Mapping[str, WeightsCfg] = field(default_factory=dict)
    default_tag: str | None = None
    legacy_key_rules: tuple[tuple[str, str], ...] = ()

    def weights_cfg(self, tag: str | None = None) -> WeightsCfg | None:
        """The config of ``tag`` (default tag when ``None``), or ``None`` if the arch has none."""
        tag = tag or self.default_tag
        return self.weights.get(tag) if tag else None


_REGISTRY: dict[str, ModelCfg] = {}


def register_model(cfg: ModelCfg) -> ModelCfg:
    """Add an architecture to the registry. Raises ``ValueError`` if the name is taken."""
    if cfg.arch in _REGISTRY:
        raise ValueError(f"a model named {cfg.arch!r} is already registered; pick another name")
    if "." in cfg.arch:
        raise ValueError(f"architecture names cannot contain '.', got {cfg.arch!r}")
    for tag, weights in cfg.weights.items():
        if tag != weights.tag:
            raise ValueError(f"{cfg.arch}: weights registered under {tag!r} carry tag {weights.tag!r}")
    if cfg.default_tag is not None and cfg.default_tag not in cfg.weights:
        raise ValueError(f"{cfg.arch}: default tag {cfg.default_tag!r} has no weights config")
    _REGISTRY[cfg.arch] = cfg
    return cfg


def _all_names() -> list[str]:
    names = list(_REGISTRY)
    names += [f"{arch}.{tag}" for arch, cfg in _REGISTRY.items() for tag in cfg.weights]
    return names


def resolve_name(name: str) -> tuple[ModelCfg, str | None]:
    """Split ``arch`` or ``arch.tag`` into the architecture config and the tag (or ``None``).

    Raises ``ValueError`` naming the closest registered names when nothing matches.
    """
    if not isinstance(name, str):
        raise TypeError(f"model name must be a string like 'featherface_v1', got {type(name).__name__}")
    arch, _, tag = name.partition(".")
    cfg = _REGISTRY.get(arch)
    if cfg is not None and (not tag or tag in cfg.weights):
        return cfg, tag or None
    close = difflib.get_close_matches(name, _all_names(), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    if cfg is not None:
        raise ValueError(
            f"{arch!r} has no weights tagged {tag!r}; available: {sorted(cfg.weights) or 'none'}.{hint}"
        )
    raise ValueError(f"unknown model {name!r}.{hint} `featherface.list_models()` lists them all.")


def get_model_cfg(name: str) -> ModelCfg:
    """The :class:`ModelCfg` for ``arch`` or ``arch.tag``."""
    return resolve_name(name)[0]


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Registered names matching an fnmatch ``pattern``, sorted.

    With ``pretrained=True`` the result lists ``arch.tag`` names that have weights; the pattern
    matches either the full name or the architecture.
    """
    if pretrained:
        names = [f"{a}.{t}" for a, cfg in _REGISTRY.items() for t in cfg.weights]
        return sorted(
            n for n in names if fnmatch.fnmatch(n, pattern) or fnmatch.fnmatch(n.split(".")[0], pattern)
        )
    return sorted(a for a in _REGISTRY if fnmatch.fnmatch(a, pattern))
