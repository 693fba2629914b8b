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

    @abstractmethod
    def infer(self, inputs: Array) -> RawOutputs:
        """Run the network on a float32 [1,3,H,W] input (H, W multiples of 128): a numpy
        array, or a torch tensor already on ``self.device`` (the GPU data path).

        Outputs may live in buffers that the next call overwrites: consume them first.
        """

    def prepare(self, input_hw: tuple[int, int]) -> None:
        """Build whatever a static-shape engine needs for this input size (export, engine
        build, tracing) now rather than at the first frame of that size."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
