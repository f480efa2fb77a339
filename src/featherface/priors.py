"""Prior (anchor) boxes: vectorised generation, cached per (height, width, device, layout)."""

from __future__ import annotations

import functools

import torch

from featherface.models.registry import PriorCfg

DEFAULT_PRIORS = PriorCfg()


def num_priors(height: int, width: int, cfg: PriorCfg = DEFAULT_PRIORS) -> int:
    """Number of priors for an ``height × width`` input."""
    return sum(
        -(-height // step) * -(-width // step) * len(sizes) for step, sizes in zip(cfg.steps, cfg.min_sizes)
    )


@functools.lru_cache(maxsize=64)
def _cached_priors(height: int, width: int, device: torch.device, cfg: PriorCfg) -> torch.Tensor:
    levels = []
    for step, sizes in zip(cfg.steps, cfg.min_sizes):
        rows, cols = -(-height // step), -(-width // step)
        cy = (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height
        cx = (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        sizes_t = torch.tensor(sizes, dtype=torch.float64)
        n = len(sizes)
        level = torch.stack(
            (
                cx[..., None].expand(rows, cols, n),
                cy[..., None].expand(rows, cols, n),
                (sizes_t / width).expand(rows, cols, n),
                (sizes_t / height).expand(rows, cols, n),
            ),
            dim=-1,
        )
        levels.append(level.reshape(-1, 4))
    priors = torch.cat(levels).to(torch.float32).to(device)
    priors.requires_grad_(False)
    return priors


def prior_boxes(
    height: int, width: int, device: torch.device | str = "cpu", cfg: PriorCfg = DEFAULT_PRIORS
) -> torch.Tensor:
    """Priors ``(P, 4)`` as ``(cx, cy, w, h)`` normalised by the input size.

    Per stride ``s`` with feature map ``ceil(H/s) × ceil(W/s)``: centre
    ``((j + 0.5)·s/W, (i + 0.5)·s/H)``, size ``(m/W, m/H)`` for each min size ``m``; ordered by
    level, row, column, min size. The returned tensor is cached and shared: do not modify it.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"prior_boxes needs a positive image size, got {height}×{width}")
    return _cached_priors(int(height), int(width), torch.device(device), cfg)


def valid_prior_mask(
    sizes: list[tuple[int, int]], input_size: tuple[int, int], cfg: PriorCfg = DEFAULT_PRIORS
) -> torch.Tensor:
    """``(B, P)`` mask of the priors of a padded ``input_size`` batch that lie inside each image.

    ``sizes`` are the per-image ``(h, w)`` before padding. A prior is valid when its feature-map
    cell is one the unpadded image would have had: row ``< ceil(h/s)`` and column ``< ceil(w/s)``.
    """
    height, width = input_size
    sizes_t = torch.tensor(sizes, dtype=torch.long).reshape(-1, 2)
    levels = []
    for step, min_sizes in zip(cfg.steps, cfg.min_sizes):
        rows, cols = -(-height // step), -(-width // step)
        valid_rows = -(-sizes_t[:, 0] // step)
        valid_cols = -(-sizes_t[:, 1] // step)
        inside = (torch.arange(rows)[None, :, None] < valid_rows[:, None, None]) & (
            torch.arange(cols)[None, None, :] < valid_cols[:, None, None]
        )
        levels.append(inside[..., None].expand(-1, rows, cols, len(min_sizes)).reshape(len(sizes_t), -1))
    return torch.cat(levels, dim=1)
