"""HybridNets' letterbox + normalisation: BGR uint8 image -> network input tensor.

Matches the reference inference script exactly where it works: INTER_AREA resize so the
longer side equals the target size, letterbox padding with value 114 up to the next
multiple of 32 (split over both sides, the odd pixel at the bottom/right), ImageNet
normalisation in RGB.

Deviations, both where the reference would crash:
- the network needs both sides to be multiples of 128 (P7); when the reference padding
  gives less (e.g. 640x480 input, or target 384 for 1280x720), the padding continues to
  the next multiple of 128, split the same way;
- a side that the resize would shrink to 0 pixels (extreme aspect ratios) is kept at 1.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from ...preprocess import PAD_VALUE, Letterbox, normalisation_tables, normalise_into
from .spec import BDD100K, ModelSpec


def letterbox(source_hw: tuple[int, int], target: int, multiple: int) -> Letterbox:
    """The geometry for an h0 x w0 image: the longer side resized to ``target``, then padded
    as the reference pads, up to multiples of ``multiple``."""
    h0, w0 = source_hw
    if h0 < 1 or w0 < 1:
        raise ValueError(f"image has no pixels ({w0}x{h0})")
    r = target / max(h0, w0)
    h, w = max(1, int(h0 * r)), max(1, int(w0 * r))
    # The reference letterboxes with scaleup=False: both sides are already <= target,
    # so its second resize never happens and only padding is added.
    padded_h = h + (target - h) % 32
    padded_w = w + (target - w) % 32
    padded_h = math.ceil(padded_h / multiple) * multiple
    padded_w = math.ceil(padded_w / multiple) * multiple
    return Letterbox((h0, w0), (h, w), (padded_h, padded_w),
                     (padded_w - w) / 2, (padded_h - h) / 2)


class Preprocessor:
    """Fills a reused float32 [1,3,H,W] buffer from a BGR uint8 image.

    The returned array is overwritten by the next call: consume it (or copy) first.
    """

    def __init__(self, target_size: int = 640, spec: ModelSpec = BDD100K):
        if target_size < spec.max_stride:
            raise ValueError(f"input size must be at least {spec.max_stride}, got {target_size}")
        self.target_size = target_size
        self.spec = spec
        self._lut = normalisation_tables(spec.mean_rgb, spec.std_rgb)
        self._letterbox: Letterbox | None = None
        self._buffer = np.empty(0, np.float32)
        self._resized = np.empty(0, np.uint8)
        self._planes: list[np.ndarray] = []

    def input_hw(self, source_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``source_hw`` (no buffers change)."""
        return letterbox(tuple(source_hw), self.target_size, self.spec.max_stride).input_hw

    def letterbox(self, source_hw: tuple[int, int]) -> Letterbox:
        if self._letterbox is None or self._letterbox.source_hw != tuple(source_hw):
            self._letterbox = letterbox(tuple(source_hw), self.target_size, self.spec.max_stride)
            lb = self._letterbox
            self._buffer = np.empty((1, 3, *lb.input_hw), np.float32)
            # Borders are constant for a geometry: fill once, frames only write the inside.
            self._buffer[0] = self._lut[:, PAD_VALUE, None, None]
            self._resized = np.empty((*lb.resized_hw, 3), np.uint8)
            self._planes = [np.empty(lb.resized_hw, np.uint8) for _ in range(3)]
        return self._letterbox

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 image HxWx3, got {bgr.dtype} {bgr.shape}")
        lb = self.letterbox(bgr.shape[:2])
        h, w = lb.resized_hw
        if (h, w) == lb.source_hw:
            resized = bgr
        else:
            resized = cv2.resize(bgr, (w, h), dst=self._resized, interpolation=cv2.INTER_AREA)
        top, left = lb.top, lb.left
        normalise_into(resized, self._lut, self._buffer[0, :, top:top + h, left:left + w],
                       swap_rb=True, planes=self._planes)
        return self._buffer, lb
