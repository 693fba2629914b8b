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

    @abstractmethod
    def infer(self, inputs: np.ndarray) -> RawOutputs:
        """Run the network on a float32 [1,3,H,W] array (H, W multiples of 128)."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
