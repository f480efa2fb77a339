"""Training checkpoints (atomic, loadable with ``weights_only=True``), RNG states and the final export.

A checkpoint is a ``torch.save`` of plain containers, numbers, strings and tensors only: RNG states
are stored as tensors, so ``torch.load(path, weights_only=True)`` reads it without unpickling code.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from featherface.weights import EXPORT_CONFIG_FILE, EXPORT_WEIGHTS_FILE, save_safetensors

CHECKPOINT_FORMAT = 1


def _atomic_write(path: Path, write: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch (CPU and ``device`` if CUDA), NumPy and Python RNG states, as tensors."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_extra": torch.tensor([np_pos, np_has_gauss], dtype=torch.int64),
        "numpy_gauss": torch.tensor(np_gauss, dtype=torch.float64),
        "python": torch.tensor(py_internal, dtype=torch.int64),
        "python_meta": torch.tensor([py_version, py_gauss is not None], dtype=torch.int64),
        "python_gauss": torch.tensor(py_gauss or 0.0, dtype=torch.float64),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, torch.Tensor], device: torch.device) -> None:
    """Undo :func:`rng_state`: every generator continues exactly where it was captured."""
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    pos, has_gauss = (int(v) for v in state["numpy_extra"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(state["numpy_gauss"])))
    version, has_py_gauss = (int(v) for v in state["python_meta"])
    py_gauss = float(state["python_gauss"]) if has_py_gauss else None
    random.setstate((version, tuple(int(v) for v in state["python"]), py_gauss))


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), NumPy's and Python's global generators."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def save_checkpoint(payload: Mapping[str, object], path: str | os.PathLike) -> Path:
    """``torch.save`` ``payload`` atomically (temp file + rename)."""
    return _atomic_write(Path(path), lambda tmp: torch.save(dict(payload), tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, object]:
    """Read a checkpoint with ``weights_only=True`` onto the CPU; checks its format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; nothing to resume from")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(
            f"cannot read training checkpoint {path} with weights_only=True ({error}); it is corrupt or "
            "was not written by featherface"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path} is not a featherface training checkpoint (format {CHECKPOINT_FORMAT})")
    return payload


def save_model_weights(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model``'s state dict atomically as safetensors, its ``arch`` in the metadata."""
    return save_safetensors(model.state_dict(), path, {"arch": str(getattr(model, "arch", None))})


def export_model(model: nn.Module, output_dir: str | os.PathLike, config: Mapping[str, object]) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``arch`` plus ``config``) into ``output_dir``.

    ``create_model(arch, checkpoint_path=output_dir)`` loads the result. Returns the weights path.
    """
    output_dir = Path(output_dir)
    document = {"arch": getattr(model, "arch", None), "format": "featherface-weights", **config}
    weights = save_model_weights(model, output_dir / EXPORT_WEIGHTS_FILE)
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    _atomic_write(output_dir / EXPORT_CONFIG_FILE, lambda tmp: Path(tmp).write_text(text))
    return weights
