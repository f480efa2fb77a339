"""Whether the model is being recorded (ONNX export, ``torch.export``, ``torch.jit.trace``) or run eagerly."""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """True while an exporter or tracer records the forward pass (then size-generic ops are used)."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting() or torch.jit.is_tracing()
