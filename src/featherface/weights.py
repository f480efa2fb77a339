"""Weights: resolve (path → package → Hugging Face cache/Hub), verify sha256, load strictly, convert.

Nothing else in the package touches the Hub. Files are safetensors; legacy ``.pth`` checkpoints
are read with ``torch.load(weights_only=True)`` and converted through the architecture's
documented key rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from featherface.models.registry import ModelCfg, WeightsCfg, resolve_name
from featherface.version import __version__

PROFILER_SUFFIXES = ("total_ops", "total_params")
LEGACY_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin")
METADATA_KEY = "featherface"
#: A training run's export folder: these two files (see ``featherface.training``).
EXPORT_WEIGHTS_FILE = "model.safetensors"
EXPORT_CONFIG_FILE = "config.json"


class WeightsError(RuntimeError):
    """Weights could not be found, verified or loaded."""


class WeightsIntegrityError(WeightsError):
    """A weights file does not have the sha256 its registry entry pins."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str | None, name: str) -> None:
    """Raise :class:`WeightsIntegrityError` if ``path`` does not hash to ``expected``."""
    if expected is None:
        return
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsIntegrityError(
            f"{name}: {path} has sha256 {actual}, expected {expected}. The file is corrupt or was "
            "tampered with and was not loaded; delete it and download again "
            "(or re-run `featherface weights import`)."
        )


def read_legacy_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``torch.save`` checkpoint, loaded without unpickling arbitrary objects.

    Accepts a plain state dict or one nested under ``state_dict`` / ``model``.
    """
    try:
        with warnings.catch_warnings():
            # Checkpoints of the original code use pickle protocol 4, which weights_only reads fine.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"cannot read {path} as a PyTorch checkpoint with weights_only=True ({error}). Only plain "
            "state dicts of tensors are accepted; arbitrary pickles are never loaded."
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def convert_legacy_state_dict(
    state_dict: Mapping[str, torch.Tensor], rules: tuple[tuple[str, str], ...]
) -> dict[str, torch.Tensor]:
    """Rename a legacy state dict to this package's keys.

    Drops profiler keys (``*total_ops`` / ``*total_params``), strips a ``module.`` prefix (from
    ``DataParallel``), then applies each ``(regex, replacement)`` rule in order.
    """
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key.endswith(PROFILER_SUFFIXES):
            continue
        key = key.removeprefix("module.")
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        converted[key] = tensor.detach().cpu().contiguous()
    return converted


def _describe(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (and {len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``model``; any missing, unexpected or mis-shaped key raises.

    The error names the offending keys so a wrong checkpoint is easy to spot.
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if state_dict[k].shape != expected[k].shape
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches: {_describe(mismatched)}")
    if problems:
        raise WeightsError(
            f"weights from {source} do not fit {type(model).__name__} "
            f"({'; '.join(problems)}). Check that the checkpoint belongs to this architecture."
        )
    model.load_state_dict(state_dict, strict=True)


def read_export(folder: str | os.PathLike, model_cfg: ModelCfg) -> dict[str, torch.Tensor]:
    """Tensors of an export folder (``model.safetensors`` + ``config.json``) after checking its ``arch``."""
    folder = Path(folder)
    weights = folder / EXPORT_WEIGHTS_FILE
    if not weights.is_file():
        raise WeightsError(
            f"{folder} is a folder without {EXPORT_WEIGHTS_FILE}; pass a weights file or the output "
            "folder of `featherface train` / `featherface distill`"
        )
    config = folder / EXPORT_CONFIG_FILE
    arch = json.loads(config.read_text()).get("arch") if config.is_file() else None
    if arch is not None and arch != model_cfg.arch:
        raise WeightsError(
            f"{folder} holds {arch} weights, not {model_cfg.arch}: "
            f"use create_model({arch!r}, checkpoint_path=...)"
        )
    return read_weights(weights, model_cfg)


def read_weights(path: str | os.PathLike, model_cfg: ModelCfg) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file, an export folder (:func:`read_export`), or a legacy
    checkpoint converted for ``model_cfg``."""
    path = Path(path)
    if path.is_dir():
        return read_export(path, model_cfg)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path))
        except Exception as error:
            raise WeightsError(f"cannot read {path} as safetensors: {error}") from None
    if path.suffix in LEGACY_SUFFIXES:
        return convert_legacy_state_dict(read_legacy_checkpoint(path), model_cfg.legacy_key_rules)
    raise WeightsError(
        f"unsupported weights file {path.name!r}: expected .safetensors or a legacy "
        f"{'/'.join(LEGACY_SUFFIXES)} checkpoint"
    )


def save_safetensors(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> Path:
    """Write tensors atomically (temp file + rename) as safetensors. Deterministic for equal input.

    ``metadata`` is stored JSON-encoded under one header key, ``featherface``: safetensors writes
    several metadata keys in an arbitrary order, which would make the sha256 unstable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in sorted(state_dict.items())}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        header = {METADATA_KEY: json.dumps(dict(metadata), sort_keys=True)} if metadata else None
        safetensors.torch.save_file(tensors, tmp, metadata=header)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def convert_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, model: str) -> str:
    """Convert a legacy checkpoint of ``model`` (``arch`` or ``arch.tag``) to safetensors.

    The result is checked by loading it strictly into a fresh model. Returns the file's sha256.
    """
    model_cfg = resolve_name(model)[0]
    state_dict = read_weights(src, model_cfg)
    load_state_dict_strict(model_cfg.builder(), state_dict, str(src))
    save_safetensors(state_dict, dst, {"arch": model_cfg.arch})
    return sha256_file(dst)


def _hub_error_message(name: str, cfg: WeightsCfg, reason: str) -> str:
    return (
        f"could not get the {name} weights from the Hugging Face Hub (repo {cfg.hf_hub_id}, "
        f"revision {cfg.revision}, file {cfg.filename}): {reason}\n"
        "To work offline, either pass checkpoint_path='path/to/weights' or install a local copy "
        f"into the Hub cache with `featherface weights import FILE --model {name}` "
        "(then pretrained=True works with HF_HUB_OFFLINE=1)."
    )


def _packaged_file(cfg: WeightsCfg) -> Path | None:
    if cfg.package_file is None:
        return None
    path = Path(str(resources.files("featherface").joinpath(cfg.package_file)))
    return path if path.is_file() else None


def resolve_pretrained(name: str) -> Path:
    """Local path of verified pretrained weights for ``arch`` or ``arch.tag``.

    Order: the copy shipped inside the package, then the Hugging Face cache / a download of the
    pinned revision. The sha256 is checked before the path is returned.
    """
    model_cfg, tag = resolve_name(name)
    cfg = model_cfg.weights_cfg(tag)
    if cfg is None:
        raise WeightsError(
            f"{model_cfg.arch} has no pretrained weights; pass checkpoint_path= or pretrained=False"
        )
    full_name = f"{model_cfg.arch}.{cfg.tag}"
    packaged = _packaged_file(cfg)
    if packaged is not None:
        verify_sha256(packaged, cfg.sha256, full_name)
        return packaged
    if cfg.hf_hub_id is None:
        raise WeightsError(f"{full_name} is neither shipped with the package nor hosted on the Hub")
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            cfg.hf_hub_id,
            cfg.filename,
            revision=cfg.revision,
            library_name="featherface",
            library_version=__version__,
        )
    except Exception as error:
        raise WeightsError(_hub_error_message(full_name, cfg, f"{type(error).__name__}: {error}")) from None
    verify_sha256(path, cfg.sha256, full_name)
    return Path(path)


def _pseudo_commit(cfg: WeightsCfg) -> str:
    return hashlib.sha1(
        f"featherface-import:{cfg.hf_hub_id}:{cfg.revision}:{cfg.sha256}".encode()
    ).hexdigest()


def import_to_hub_cache(
    src: str | os.PathLike, name: str, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Convert (if needed) and install ``src`` in the Hugging Face cache as the weights of ``name``.

    Afterwards ``create_model(name, pretrained=True)`` works with no network. The file must hash
    to the registry's sha256. Returns the installed snapshot path.
    """
    from huggingface_hub import constants

    model_cfg, tag = resolve_name(name)
    cfg = model_cfg.weights_cfg(tag)
    if cfg is None or cfg.hf_hub_id is None or cfg.revision is None:
        raise WeightsError(f"{name} has no Hub entry to import weights for")
    full_name = f"{model_cfg.arch}.{cfg.tag}"
    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    repo_dir = cache / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    blobs = repo_dir / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=blobs, prefix=".import-"))
    try:
        converted = staged / cfg.filename
        if Path(src).suffix == ".safetensors":
            state_dict = read_weights(src, model_cfg)
            load_state_dict_strict(model_cfg.builder(), state_dict, str(src))
            converted.write_bytes(Path(src).read_bytes())
        else:
            convert_checkpoint(src, converted, full_name)
        digest = sha256_file(converted)
        if cfg.sha256 is not None and digest != cfg.sha256:
            raise WeightsIntegrityError(
                f"{src} converts to a file with sha256 {digest}, but {full_name} pins {cfg.sha256}: these "
                "are not the published weights. Load them with checkpoint_path= instead."
            )
        blob = blobs / digest
        os.replace(converted, blob)
    finally:
        for leftover in staged.iterdir():
            leftover.unlink()
        staged.rmdir()
    commit = cfg.revision if re.fullmatch(r"[0-9a-f]{40}", cfg.revision) else _pseudo_commit(cfg)
    snapshot = repo_dir / "snapshots" / commit / cfg.filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        snapshot.unlink()
    try:
        snapshot.symlink_to(os.path.relpath(blob, snapshot.parent))
    except OSError:
        snapshot.write_bytes(blob.read_bytes())
    if commit != cfg.revision:
        refs = repo_dir / "refs"
        refs.mkdir(exist_ok=True)
        (refs / cfg.revision).write_text(commit)
    return snapshot


def describe_weights(name: str) -> str:
    """A JSON summary of a weight set's registry entry (for ``featherface weights info``)."""
    model_cfg, tag = resolve_name(name)
    cfg = model_cfg.weights_cfg(tag)
    if cfg is None:
        raise WeightsError(f"{model_cfg.arch} has no pretrained weights")
    fields = {
        "name": f"{model_cfg.arch}.{cfg.tag}",
        "hf_hub_id": cfg.hf_hub_id,
        "revision": cfg.revision,
        "filename": cfg.filename,
        "sha256": cfg.sha256,
        "num_params": cfg.num_params,
        "license": cfg.license,
        "source": cfg.source,
        "metrics": cfg.metrics,
    }
    return json.dumps(fields, indent=2)
