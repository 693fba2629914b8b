"""torch2trt: the engine is converted from the PyTorch module instead of parsed from ONNX.

Jetson images often ship ``torch2trt`` (NVIDIA-AI-IOT); this backend is used when it is
installed. Only the build differs from :mod:`.tensorrt_backend`: the serialized engine is
cached under the same key rules (kind "torch2trt", plus the torch2trt version) and run
with the same TensorRT execution context and buffers. torch2trt sets precision with the
builder flags (``fp16_mode``, ``int8_mode`` with its own calibrator), which TensorRT 11
removed: there it builds fp32 only, and the tensorrt backend builds fp16 and int8.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from .engine_cache import EngineKey
from .base import BackendUnavailable
from .build_lock import exclusive
from .tensorrt_backend import (PRECISIONS, TensorRTBackend, WORKSPACE_BYTES,  # noqa: F401
                               import_tensorrt, major_minor)  # PRECISIONS: what it claims


def import_torch2trt():
    try:
        import torch2trt
    except ImportError as exc:
        raise BackendUnavailable(
            f"missing Python module 'torch2trt' ({exc}): install it from "
            "github.com/NVIDIA-AI-IOT/torch2trt (Jetson images often have it)") from None
    return torch2trt


class Torch2TRTBackend(TensorRTBackend):
    name = "torch2trt"
    kind = "torch2trt"

    def _import(self):
        self.torch2trt = import_torch2trt()
        return import_tensorrt()

    def _check_precision(self, precision: str) -> None:
        if precision != "fp32" and major_minor(self.trt) >= (11, 0):
            raise BackendUnavailable(
                f"torch2trt builds {precision} with the builder flags TensorRT "
                f"{self.trt.__version__} removed: use backend tensorrt for {precision} "
                "(strongly typed fp16, Q/DQ int8) or torch2trt with precision fp32")

    def recipe(self) -> str:
        return ""  # converted from the module, whatever the precision

    def runtime_id(self) -> str:
        version = getattr(self.torch2trt, "__version__", "unknown")
        return f"torch2trt {version}, tensorrt {self.trt.__version__}"

    def _build(self, key: EngineKey, out: Path, frames: list[np.ndarray] | None) -> None:
        device = self.device  # where the buffers live: the conversion traces there
        model = copy.deepcopy(self.model).to(device, torch.float32).eval()
        example = torch.zeros((key.batch, 3, *key.input_hw), device=device)
        options = {}
        if frames:
            # torch2trt's calibrator copies each item (a list of input tensors without the
            # batch dimension) into one slot of its batch buffer.
            options = {"int8_mode": True,
                       "int8_calib_dataset": [[torch.from_numpy(f[0]).to(device)]
                                              for f in frames]}
        with exclusive("torch2trt conversion"), torch.no_grad():  # it patches torch meanwhile
            converted = self.torch2trt.torch2trt(
                model, [example], input_names=[self.adapter.input_name],
                output_names=list(self.adapter.output_names),
                fp16_mode=self.precision in ("fp16", "int8"),
                max_workspace_size=WORKSPACE_BYTES, **options)
        out.write_bytes(bytes(converted.engine.serialize()))
