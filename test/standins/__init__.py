"""Stand-ins for what cannot exist on a machine without an NVIDIA GPU: TensorRT's Python
bindings (tensorrt/) and torch2trt (torch2trt/). Tests load them with :func:`install`,
which also makes the two things CUDA would provide: ``torch.cuda.is_available()`` true for
the registry's availability check, and the TensorRT backend's buffers on the host
(:class:`HostBuffers`, its one seam for where buffers live). Everything else is the
project's real code.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
GENERATIONS = ("10.3.0", "11.1.0")  # JetPack 6.1/6.2 and most desktops; the current release


class HostBuffers:
    """TensorRTBackend's buffers on the host: CPU tensors, stream 0, nothing to wait for
    (the stand-in engine runs synchronously)."""

    def __init__(self, device: str, backend: str):
        self.device = "cpu"
        self.requested = device

    def identity(self) -> str:
        return "TensorRT stand-in on the CPU"

    def empty(self, shape, dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype)

    def stream(self) -> int:
        return 0

    def synchronize(self) -> None:
        pass


def load(name: str):
    """A fresh module from test/standins/<name>/, registered in sys.modules as ``name``."""
    spec = importlib.util.spec_from_file_location(name, HERE / name / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def install(monkeypatch, version: str = GENERATIONS[0], torch2trt: bool = False):
    """Load the TensorRT stand-in of ``version`` (and torch2trt) for one test; ``monkeypatch``
    undoes everything afterwards. Returns the ``tensorrt`` module."""
    from hybridnets_ros.backends.tensorrt_backend import TensorRTBackend

    monkeypatch.setenv("TENSORRT_STANDIN_VERSION", version)
    for name in ("tensorrt", "torch2trt"):
        monkeypatch.delitem(sys.modules, name, raising=False)
        monkeypatch.setitem(sys.modules, name, None)  # restored (removed) at the end
    trt = load("tensorrt")
    if torch2trt:
        load("torch2trt")
    else:
        del sys.modules["torch2trt"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(TensorRTBackend, "buffers_type", HostBuffers)
    return trt
