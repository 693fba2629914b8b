"""The backend interface."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


class BackendUnavailable(RuntimeError):
    """The requested engine cannot run here; the message says what is missing."""


@dataclass
class RawOutputs:
    """Network outputs for a batch: [B,N,4] deltas, [B,N,C] scores, [B,S,H,W] logits."""

    regression: Array
    classification: Array
    segmentation: Array


class Backend(ABC):
    name: str = "?"
    device: str = "cpu"
    precision: str = "fp32"
    # True: ``infer`` takes a batch [B,3,H,W] of any B (a static-shape engine is built per
    # batch size used); False: B is 1 and callers run several frames one at a time.
    batching: bool = False

    @abstractmethod
    def infer(self, inputs: Array) -> RawOutputs:
        """Run the network on a float32 [1,3,H,W] input (H, W multiples of 128): a numpy
        array, or a torch tensor already on ``self.device`` (the GPU data path).

        Outputs may live in buffers that the next call overwrites: consume them first.
        """

    def prepare(self, input_hw: tuple[int, int]) -> None:
        """Build whatever a static-shape engine needs for this input size (export, engine
        build, tracing) now rather than at the first frame of that size. Backends with
        ``batching`` also take ``batch`` (default 1), the batch size to build for."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


class CachedEngineBackend(Backend):
    """Base of the backends that run a static-shape model built per input size and kept in
    the engine cache (ONNX Runtime, TensorRT, torch2trt)."""

    def _init_engine(self, model, device: str, precision: str, calib, source_hw,
                     input_size: int, cache, digest: str | None) -> None:
        from .engine_cache import EngineCache, weights_digest

        if precision == "int8" and calib is None:
            raise BackendUnavailable(f"{self.name} int8 needs calibration images: pass a folder "
                                     "of frames like the camera's (--calib DIR)")
        self.device = device
        self.precision = precision
        self.calib = calib          # INT8 calibration image folder
        self.source_hw = source_hw  # camera resolution, for INT8 calibration
        self.input_size = input_size
        self.cache = cache or EngineCache()
        self.model = model
        self.digest = digest or weights_digest(model)
