"""Optimisation: AdamW parameter groups, the warm-up + cosine schedule, and the EMA of the weights."""

from __future__ import annotations

import copy
import functools
import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def adamw(module: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on conv / linear weights only (not on biases or norm parameters)."""
    decay, no_decay = [], []
    for param in module.parameters():
        if param.requires_grad:
            (decay if param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, foreach=True)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Learning-rate factor of optimiser step ``step`` (0-based): linear from ``1/warmup_steps`` to 1 over
    the warm-up, then cosine down to ``min_ratio`` at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_ratio: float = 0.01
) -> LambdaLR:
    """A per-step :class:`LambdaLR` following :func:`warmup_cosine_factor`."""
    return LambdaLR(
        optimizer,
        functools.partial(
            warmup_cosine_factor, warmup_steps=warmup_steps, total_steps=total_steps, min_ratio=min_ratio
        ),
    )


class ModelEma:
    """Exponential moving average of a model's parameters and buffers.

    After ``n`` updates the decay is ``min(decay, (1 + n) / (10 + n))``, so early averages are not
    dominated by the random initialisation. Integer buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        current = model.state_dict(keep_vars=True)
        averaged, averaged_from, copied, copied_from = [], [], [], []
        for name, value in self.module.state_dict(keep_vars=True).items():
            if value.is_floating_point():
                averaged.append(value)
                averaged_from.append(current[name])
            else:
                copied.append(value)
                copied_from.append(current[name])
        # one multi-tensor kernel per group instead of two kernels per tensor (~600 tensors per step)
        if averaged:
            torch._foreach_lerp_(averaged, averaged_from, 1.0 - decay)
        if copied:
            torch._foreach_copy_(copied, copied_from)

    def state_dict(self) -> dict[str, object]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
