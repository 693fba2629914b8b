"""The backend interface, and the one object every backend is built from."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..core.adapter import ModelAdapter
from ..core.lru import ENGINES_KEPT, ShapeLru

__all__ = ["Array", "Backend", "BackendSpec", "BackendUnavailable", "CachedEngineBackend",
           "ENGINES_KEPT", "ShapeLru"]

Array = np.ndarray | torch.Tensor


class BackendUnavailable(RuntimeError):
    """The requested engine cannot run here; the message says what is missing."""


@dataclass(frozen=True)
class BackendSpec:
    """What a backend is built from: the network (its module and its adapter, which says
    what its outputs are) and the engine options. Every backend class takes exactly this,
    so the factory and the backends cannot drift apart; options a backend does not use
    are ignored by it, so that ``auto`` works with any combination."""

    model: torch.nn.Module
    adapter: ModelAdapter                # input/output names and order, cache name, int8
    device: str = "cpu"
    precision: str = "fp32"
    calib: str | Path | None = None      # INT8 calibration image folder
    source_hw: tuple[int, int] | None = None  # camera resolution, for INT8 calibration
    input_size: int = 640                # the pre-processing's target size (calibration)
    cache: object | None = None          # an EngineCache (default: the user's)
    digest: str | None = None            # the weights' digest, if already known
    optimize: bool = True                # torch: trace and freeze per shape
    max_engines: int = ENGINES_KEPT      # static-shape engines kept in memory (an LRU)
    cuda_graph: bool = False             # torch: replay as a CUDA graph


class Backend(ABC):
    name: str = "?"
    device: str = "cpu"
    precision: str = "fp32"
    adapter: ModelAdapter  # which network it runs: the names and order of its outputs
    # True: ``infer`` takes a batch [B,3,H,W] of any B (a static-shape engine is built per
    # batch size used); False: B is 1 and callers run several frames one at a time.
    batching: bool = False
    # False: building an engine must not run beside inference in another thread (CUDA
    # graph capture would record the other thread's kernels).
    builds_beside_inference: bool = True
    engines: ShapeLru  # (batch, H, W) -> what runs that static input shape

    @abstractmethod
    def __init__(self, spec: BackendSpec):
        """Raises BackendUnavailable naming what this engine lacks here."""

    @abstractmethod
    def infer(self, inputs: Array) -> tuple:
        """Run the network on a float32 [B,3,H,W] input: a numpy array, or a torch tensor
        already on ``self.device`` (the GPU data path). Gives the outputs as the named
        tuple of ``network.output_names`` (``network.pack``).

        Outputs may live in buffers that the next call overwrites: consume them first.
        """

    def prepare(self, input_hw: tuple[int, int]) -> None:
        """Build whatever a static-shape engine needs for this input size (export, engine
        build, tracing) now rather than at the first frame of that size. Backends with
        ``batching`` also take ``batch`` (default 1), the batch size to build for."""

    def has_engine(self, shape: tuple[int, int, int]) -> bool:
        """Whether a (batch, H, W) input runs without building anything first."""
        return shape in self.engines

    def describe(self) -> str:
        return f"{self.name} on {self.device}"


class CachedEngineBackend(Backend):
    """Base of the backends that run a static-shape model built per input size and kept in
    the engine cache (ONNX Runtime, OpenVINO, TensorRT, torch2trt)."""

    def _init_engine(self, spec: BackendSpec) -> None:
        from .engine_cache import EngineCache, weights_digest

        self.adapter = spec.adapter
        if spec.precision == "int8" and not spec.adapter.int8_calibration:
            raise BackendUnavailable(f"int8 calibration is not available for "
                                     f"{spec.adapter.name} here; run it in fp32")
        if spec.precision == "int8" and spec.calib is None:
            raise BackendUnavailable(f"{self.name} int8 needs calibration images: pass a folder "
                                     "of frames like the camera's (--calib DIR)")
        self.device = spec.device
        self.precision = spec.precision
        self.calib = spec.calib            # INT8 calibration image folder
        self.source_hw = spec.source_hw    # camera resolution, for INT8 calibration
        self.input_size = spec.input_size
        self.cache = spec.cache or EngineCache()
        self.model = spec.model
        self.digest = spec.digest or weights_digest(spec.model)

    def calibration_frames(self, hw: tuple[int, int]) -> list[np.ndarray]:
        """The INT8 calibration inputs for network input ``hw``, pre-processed as live frames
        of the camera (``source_hw``, else one assumed from ``hw``)."""
        from .quantize import assumed_camera, calibration_frames
        preprocessor = self.adapter.preprocessor(self.input_size)
        source_hw = self.source_hw or assumed_camera(hw, preprocessor.input_hw)
        frames = calibration_frames(self.calib, source_hw, preprocessor)
        if frames[0].shape[2:] != tuple(hw):
            raise BackendUnavailable(f"calibration frames give input {frames[0].shape[2:]}, the "
                                     f"camera gives {hw}: pass the camera resolution (source_hw)")
        return frames
