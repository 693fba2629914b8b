"""HybridNets' pre-processing in torch: the letterbox and normalisation of :mod:`.preprocess`,
written with torch ops so it runs where the network runs (the GPU data path on CUDA).

One upload of the raw uint8 frame (through a pinned staging buffer on CUDA), then resize,
padding and normalisation on the device into a buffer allocated once per camera resolution.
Nothing here is CUDA-specific: the tests run it on CPU tensors against the numpy path.

The resize reproduces OpenCV's INTER_AREA:
- exact integer downscale (1280x720 -> 640x360 is 2x, 1920x1080 -> 3x): the mean of each
  k x k block, rounded as OpenCV does (half up for 2x, its SIMD path; half to even
  otherwise, which only differs when k is even). Bit-exact.
- any other ratio: separable per-axis weight matrices, out = Wy @ image @ Wx^T. For a
  downscale these are OpenCV's pixel-overlap area weights; for an upscale, OpenCV's
  INTER_AREA linear weights. The sums run in float32 (OpenCV uses fixed point for the
  upscale), so a few pixels differ by one grey level; the tests bound that.
Normalisation is (v / 255 - mean) / std in float32, the arithmetic the numpy path's
lookup table was computed with, so it gives the same floats.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ...preprocess import PAD_VALUE, Letterbox
from .preprocess import letterbox
from .spec import BDD100K, ModelSpec


def area_weights(src: int, dst: int) -> np.ndarray:
    """[dst, src] float64 INTER_AREA weights along one axis (rows sum to 1)."""
    weights = np.zeros((dst, src))
    scale = src / dst
    if scale >= 1:  # downscale: overlap of each source pixel with the destination cell
        for d in range(dst):
            start, stop = d * scale, min(d * scale + scale, src)
            for s in range(int(math.floor(start)), int(math.ceil(stop))):
                weights[d, s] = min(stop, s + 1) - max(start, s)
            weights[d] /= weights[d].sum()
        return weights
    inv = dst / src  # upscale: OpenCV's INTER_AREA is linear with these coefficients
    for d in range(dst):
        s = int(math.floor(d * scale))
        f = (d + 1) - (s + 1) * inv
        f = 0.0 if f <= 0 else f - math.floor(f)
        weights[d, min(s, src - 1)] += 1 - f
        weights[d, min(s + 1, src - 1)] += f
    return weights


def integer_factor(source_hw: tuple[int, int], resized_hw: tuple[int, int]) -> int | None:
    """k when the resize is an exact k x k downscale in both directions, else None."""
    (h0, w0), (h, w) = source_hw, resized_hw
    if h0 % h == 0 and w0 % w == 0 and h0 // h == w0 // w:
        return h0 // h
    return None


class TorchPreprocessor:
    """Fills a reused float32 [1,3,H,W] tensor on ``device`` from a uint8 HxWx3 frame.

    Takes a numpy array (uploaded once) or a uint8 tensor already on the device. The
    returned tensor is overwritten by the next call: consume it (or copy) first.
    """

    def __init__(self, target_size: int = 640, spec: ModelSpec = BDD100K,
                 device: str | torch.device = "cpu"):
        if target_size < spec.max_stride:
            raise ValueError(f"input size must be at least {spec.max_stride}, got {target_size}")
        self.target_size = target_size
        self.spec = spec
        self.device = torch.device(device)
        self._mean = torch.tensor(spec.mean_rgb, dtype=torch.float32, device=self.device)[:, None, None]
        self._std = torch.tensor(spec.std_rgb, dtype=torch.float32, device=self.device)[:, None, None]
        self._letterbox: Letterbox | None = None

    def input_hw(self, source_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``source_hw`` (no buffers change)."""
        return letterbox(tuple(source_hw), self.target_size, self.spec.max_stride).input_hw

    def letterbox(self, source_hw: tuple[int, int]) -> Letterbox:
        if self._letterbox is None or self._letterbox.source_hw != tuple(source_hw):
            self._setup(letterbox(tuple(source_hw), self.target_size, self.spec.max_stride))
        return self._letterbox

    def _setup(self, lb: Letterbox) -> None:
        """Buffers and the resize for one camera resolution, made once."""
        dev = self.device
        (h0, w0), (h, w) = lb.source_hw, lb.resized_hw
        self._buffer = torch.empty((1, 3, *lb.input_hw), dtype=torch.float32, device=dev)
        # Borders are constant for a geometry: fill once, frames only write the inside.
        pad = torch.full((3, 1, 1), float(PAD_VALUE), device=dev)
        self._buffer[0] = (pad / 255 - self._mean) / self._std
        self._inside = self._buffer[0, :, lb.top:lb.top + h, lb.left:lb.left + w]
        self._staging = None
        if dev.type == "cuda":
            self._staging = torch.empty((h0, w0, 3), dtype=torch.uint8, pin_memory=True)
            self._frame = torch.empty((h0, w0, 3), dtype=torch.uint8, device=dev)
        self._source = torch.empty((3, h0, w0), dtype=torch.float32, device=dev)
        self._resized = torch.empty((3, h, w), dtype=torch.float32, device=dev)
        self._resize = self._make_resize(lb)
        self._letterbox = lb

    def _make_resize(self, lb: Letterbox) -> Callable[[torch.Tensor], torch.Tensor]:
        (h0, w0), (h, w) = lb.source_hw, lb.resized_hw
        if (h, w) == (h0, w0):
            return lambda source: source
        k = integer_factor((h0, w0), (h, w))
        if k is not None:
            area = float(k * k)

            def block_mean(source: torch.Tensor) -> torch.Tensor:
                sums = torch.sum(source.view(3, h, k, w, k), dim=(2, 4), out=self._resized)
                if k == 2:  # OpenCV's SIMD 2x path: (sum + 2) >> 2
                    return sums.add_(area / 2).div_(area).floor_()
                return sums.div_(area).round_()  # cvRound: half to even
            return block_mean

        wy = torch.from_numpy(area_weights(h0, h).astype(np.float32)).to(self.device)
        wx_t = torch.from_numpy(area_weights(w0, w).T.astype(np.float32)).to(self.device)
        columns = torch.empty((3, h0, w), dtype=torch.float32, device=self.device)

        def separable(source: torch.Tensor) -> torch.Tensor:
            torch.matmul(source, wx_t, out=columns)
            torch.matmul(wy, columns, out=self._resized)
            return self._resized.round_().clamp_(0, 255)
        return separable

    def __call__(self, image: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, Letterbox]:
        """``image``: uint8 HxWx3 BGR."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype not in (np.uint8, torch.uint8):
            raise ValueError(f"expected a uint8 image HxWx3, got {image.dtype} {tuple(image.shape)}")
        lb = self.letterbox(tuple(image.shape[:2]))
        if isinstance(image, np.ndarray):
            if self._staging is not None:  # one upload through pinned memory
                self._staging.copy_(torch.from_numpy(image))
                image = self._frame.copy_(self._staging, non_blocking=True)
            else:
                image = torch.from_numpy(image)
        # HWC uint8 -> CHW float32 in one pass; RGB plane c comes from BGR channel 2 - c.
        self._source.copy_(image.permute(2, 0, 1))
        resized = self._resize(self._source)
        for c, src in enumerate((2, 1, 0)):
            torch.div(resized[src], 255, out=self._inside[c])
        self._inside.sub_(self._mean).div_(self._std)
        return self._buffer, lb
