"""What every network's pre-processing shares: the letterbox geometry and the
normalisation of uint8 pixels by lookup table (each network's folder has its own
pre-processing built on these)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """Geometry linking a source image to the network input."""

    source_hw: tuple[int, int]   # (h0, w0) of the image given
    resized_hw: tuple[int, int]  # (h, w) after the aspect-preserving resize
    input_hw: tuple[int, int]    # (H, W) of the network input
    pad_w: float                 # padding per side, as the reference keeps it (may end in .5)
    pad_h: float

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
