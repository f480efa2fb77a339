"""Shared fixtures: the ``../shared`` data folder, the V1 checkpoint and golden outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEATHERFACE_SHARED", REPO.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under the shared data folder; skips the test with the reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path}: the shared data folder that sits beside the repository")
    return path


def link_subset200_images(tmp_path: Path, count: int) -> Path:
    """The first ``count`` subset200 Parade images in the official layout (linked, not copied)."""
    event = shared_path("data", "wider_val_subset200", "images", "0--Parade")
    folder = tmp_path / "images" / event.name
    folder.mkdir(parents=True)
    for image in sorted(event.iterdir())[:count]:
        (folder / image.name).symlink_to(image)
    return folder.parent


@pytest.fixture(scope="session")
def v1_checkpoint() -> Path:
    return shared_path("weights", "featherface_v1_widerface.pth")


@pytest.fixture(scope="session")
def v1_model(v1_checkpoint: Path) -> torch.nn.Module:
    from featherface import featherface_v1

    return featherface_v1(checkpoint_path=v1_checkpoint)


@pytest.fixture(scope="session")
def golden() -> tuple[dict, dict[str, np.ndarray]]:
    meta = json.loads(shared_path("golden", "featherface_v1_golden.json").read_text())
    arrays = np.load(shared_path("golden", "featherface_v1_golden.npz"))
    return meta, {k: arrays[k] for k in arrays.files}
