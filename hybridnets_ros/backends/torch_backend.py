"""Eager PyTorch, CPU or CUDA."""
from __future__ import annotations

import numpy as np
import torch

from .base import Backend, BackendUnavailable, RawOutputs


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, model: torch.nn.Module, device: str = "cpu", half: bool = False):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' requested but torch.cuda.is_available() is "
                                     f"False (torch {torch.__version__}, built for CUDA "
                                     f"{torch.version.cuda or 'none'})")
        if half and not device.startswith("cuda"):
            raise BackendUnavailable("fp16 needs a CUDA device")
        self.device = device
        self.dtype = torch.float16 if half else torch.float32
        self.model = model.to(device=device, dtype=self.dtype).eval()

    def infer(self, inputs: np.ndarray) -> RawOutputs:
        x = torch.from_numpy(inputs).to(self.device, self.dtype, non_blocking=True)
        with torch.inference_mode():
            regression, classification, segmentation = self.model(x)
        if x.is_cuda:  # finish here so the caller's timings and host reads are honest
            torch.cuda.synchronize(x.device)
        return RawOutputs(regression, classification, segmentation)

    def describe(self) -> str:
        precision = "fp16" if self.dtype == torch.float16 else "fp32"
        return f"torch {torch.__version__} {precision} on {self.device}" + (
            f" ({torch.get_num_threads()} threads)" if self.device == "cpu" else "")
