"""Choosing and constructing a backend by name."""
from __future__ import annotations

import torch

from .base import Backend, BackendUnavailable

BACKENDS = ("torch",)


def available_backends() -> list[str]:
    return ["torch"]


def create_backend(name: str, model: torch.nn.Module, device: str = "cpu",
                   half: bool = False) -> Backend:
    if name in ("auto", "torch"):
        from .torch_backend import TorchBackend
        return TorchBackend(model, device=device, half=half)
    raise BackendUnavailable(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
