"""The backend interface."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from ..core.family import FAMILIES, HYBRIDNETS, ModelFamily

Array = np.ndarray | torch.Tensor


# Static-shape engines (sessions, traces, compiled models) kept per backend, one per network
# input size: each holds 34-290 MB, so a stream of odd sizes must not keep one each. The
# camera's size plus a couple of others stay; the least recently used goes.
ENGINES_KEPT = 3


class ShapeLru(OrderedDict):
    """A dict of at most ``size`` entries; reading an entry makes it the most recent, and
    storing one beyond ``size`` drops the least recently used."""

    def __init__(self, size: int = ENGINES_KEPT):
        super().__init__()
        self.size = size

    def __getitem__(self, key):
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class BackendUnavailable(RuntimeError):
    """The requested engine cannot run here; the message says what is missing."""


@dataclass
class RawOutputs:
    """Network outputs for a batch: [B,N,4] deltas, [B,N,C] scores, [B,S,H,W] logits."""

    regression: Array
    classification: Array
    segmentation: Array


Outputs = RawOutputs | tuple  # RawOutputs for HybridNets; else the family's output_names order


def pack_outputs(family: ModelFamily, outputs) -> Outputs:
    """A network's outputs as the pipeline of ``family`` takes them."""
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    return RawOutputs(*outputs) if family is HYBRIDNETS else outputs


def family_of(name: str) -> ModelFamily:
    if name not in FAMILIES:
        raise BackendUnavailable(f"unknown model family {name!r}; choose from "
                                 f"{', '.join(FAMILIES)}")
    return FAMILIES[name]


class Backend(ABC):
    name: str = "?"
    device: str = "cpu"
    precision: str = "fp32"
    family: ModelFamily = HYBRIDNETS  # which network it runs: the outputs' form
    # True: ``infer`` takes a batch [B,3,H,W] of any B (a static-shape engine is built per
    # batch size used); False: B is 1 and callers run several frames one at a time.
    batching: bool = False

    @abstractmethod
    def infer(self, inputs: Array) -> Outputs:
        """Run the network on a float32 [1,3,H,W] input (for HybridNets H, W multiples of
        128): a numpy array, or a torch tensor already on ``self.device`` (the GPU data path).
        HybridNets gives RawOutputs, the other families a tuple in ``family.output_names``
        order.

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
                     input_size: int, cache, digest: str | None,
                     family: str = "hybridnets") -> None:
        from .engine_cache import EngineCache, weights_digest

        self.family = family_of(family)
        if self.family is not HYBRIDNETS and precision == "int8":
            raise BackendUnavailable(f"int8 calibration is HybridNets-only here; run "
                                     f"{self.family.name} in fp32")

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
