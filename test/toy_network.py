"""A fifth network, toy-sized, laid out as a real one would be in ``core/models/toy/``:
the torch module, its pre- and post-processing, and its ModelAdapter. Only the tests
register it (test_fifth_network.py)."""
from __future__ import annotations

import numpy as np
import torch

from hybridnets_ros.core.adapter import SEMANTIC, ModelAdapter, Result
from hybridnets_ros.core.postprocess import Detections, first_argmax, host_array, max_softmax
from hybridnets_ros.core.preprocess import normalisation_tables, normalise_into

CLASS_NAMES = ("background", "red")
MEAN_RGB, STD_RGB = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # plain v / 255


class ToyNet(torch.nn.Module):
    """Class 1 ("red") scores the red channel, class 0 a constant 0.5: a pixel is red when
    its red value is above 127 (a 1x1 convolution, the outputs at the input's size)."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.head.weight.zero_()
            self.head.weight[1, 0] = 1.0  # input plane 0 is red (RGB)
            self.head.bias.copy_(torch.tensor([0.5, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class ToyPreprocessor:
    def __init__(self):
        self._tables = normalisation_tables(MEAN_RGB, STD_RGB)
        self._buffer = np.empty(0, np.float32)  # reused: overwritten by the next frame

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, None]:
        shape = (1, 3, *bgr.shape[:2])
        if self._buffer.shape != shape:
            self._buffer = np.empty(shape, np.float32)
        normalise_into(bgr, self._tables, self._buffer[0], swap_rb=True)
        return self._buffer, None

    def input_hw(self, image_hw) -> tuple[int, int]:
        return tuple(image_hw)


def toy_postprocess(outputs, index: int, _context, image_hw, _settings,
                    confidence: bool = False) -> Result:
    scores = host_array(outputs[0][index])
    return Result(Detections.empty(), first_argmax(scores),
                  confidence=max_softmax(scores) if confidence else None)


class ToyAdapter(ModelAdapter):
    name = "toy"
    method = "toy: red pixels (a test network)"
    summary = "red pixels"
    seg_classes = CLASS_NAMES
    seg_colors_rgb = ((0, 0, 0), (255, 0, 0))
    products = frozenset({SEMANTIC})
    drivable_classes = ("red",)
    obstacle_classes = ("background",)
    weights_name = "toy.pth"
    weights_source = "test/toy_network.py (random weights only)"
    output_names = ("logits",)

    def build_module(self, **_) -> ToyNet:
        return ToyNet().eval()

    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     **_) -> ToyPreprocessor:
        return ToyPreprocessor()

    def postprocessor(self, on_device: bool = False, **_):
        return toy_postprocess
