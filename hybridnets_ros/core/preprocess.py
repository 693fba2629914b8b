"""Letterbox + normalisation: BGR uint8 image -> network input tensor.

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
from dataclasses import dataclass

import cv2
import numpy as np

from .spec import BDD100K, ModelSpec

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Geometry linking a source image to the network input."""

    source_hw: tuple[int, int]   # (h0, w0) of the image given
    resized_hw: tuple[int, int]  # (h, w) after the aspect-preserving resize
    input_hw: tuple[int, int]    # (H, W) of the network input
    pad_w: float                 # padding per side, as the reference keeps it (may end in .5)
    pad_h: float

    @classmethod
    def compute(cls, source_hw: tuple[int, int], target: int, multiple: int) -> "Letterbox":
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
        return cls((h0, w0), (h, w), (padded_h, padded_w), (padded_w - w) / 2, (padded_h - h) / 2)

    @property
    def top(self) -> int:
        return int(round(self.pad_h - 0.1))

    @property
    def left(self) -> int:
        return int(round(self.pad_w - 0.1))

    @property
    def gain(self) -> float:
        """Scale from source to resized pixels, as the reference uses it (h / h0)."""
        return self.resized_hw[0] / self.source_hw[0]

    def crop_margins(self) -> tuple[int, int]:
        """(rows, cols) the reference removes from *both* sides of the mask: int(pad)."""
        return int(self.pad_h), int(self.pad_w)


def normalisation_tables(mean, std) -> np.ndarray:
    """[3, 256] float32: uint8 value -> ``(v / 255 - mean[c]) / std[c]`` per channel, in the
    float32 arithmetic of the references (ToTensor, then Normalize). Elementwise, so looking
    the values up gives exactly the computed ones."""
    mean = np.asarray(mean, np.float32)[:, None]
    std = np.asarray(std, np.float32)[:, None]
    return (np.arange(256, dtype=np.float32)[None, :] / np.float32(255) - mean) / std


def normalise_into(bgr: np.ndarray, tables: np.ndarray, out: np.ndarray, swap_rb: bool,
                   planes: list[np.ndarray] | None = None) -> None:
    """Writes ``tables[c]`` of each channel c of a BGR uint8 image into ``out[c]`` (a
    float32 [3, h, w] view, e.g. the inside of a letterboxed tensor); ``swap_rb``: channel
    c of the tensor is BGR channel 2 - c (RGB networks). One cv2.LUT with a float table per
    plane, straight into the tensor: faster than numpy's take (which first widens the
    uint8 indices) or the float maths per pixel. ``planes``: cv2.split's buffers."""
    split = cv2.split(bgr) if planes is None else cv2.split(bgr, planes)
    for c in range(3):
        cv2.LUT(split[2 - c] if swap_rb else split[c], tables[c], dst=out[c])


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
        return Letterbox.compute(tuple(source_hw), self.target_size, self.spec.max_stride).input_hw

    def letterbox(self, source_hw: tuple[int, int]) -> Letterbox:
        if self._letterbox is None or self._letterbox.source_hw != tuple(source_hw):
            self._letterbox = Letterbox.compute(tuple(source_hw), self.target_size,
                                                self.spec.max_stride)
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
