"""Anchor boxes of the detection head (pure geometry, computed once per input size)."""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from .spec import ModelSpec


@lru_cache(maxsize=8)
def generate_anchors(input_hw: tuple[int, int], spec: ModelSpec) -> np.ndarray:
    """Anchors [N, 4] float32 as (y1, x1, y2, x2) in network-input pixels.

    Order matches the heads' outputs: pyramid level (P3 first), then position row-major,
    then the (scale, ratio) pairs in ``itertools.product`` order. Computed in float64 and
    cast once, as the reference does. The array is shared between callers: read-only.
    """
    height, width = input_hw
    pairs = list(itertools.product(spec.anchor_scales, spec.anchor_ratios))
    ratios = np.array([ratio for _, ratio in pairs])  # (x, y) factor per anchor
    levels = []
    for level in spec.pyramid_levels:
        stride = 2 ** level
        if height % stride or width % stride:
            raise ValueError(f"input size {width}x{height} is not a multiple of stride {stride}")
        xs = np.arange(stride / 2, width, stride)
        ys = np.arange(stride / 2, height, stride)
        xv, yv = (a.reshape(-1, 1) for a in np.meshgrid(xs, ys))  # [positions, 1]
        base = np.array([spec.anchor_scale * stride * scale for scale, _ in pairs])
        half_x = base * ratios[:, 0] / 2.0  # [anchors per position]
        half_y = base * ratios[:, 1] / 2.0
        boxes = np.stack([yv - half_y, xv - half_x, yv + half_y, xv + half_x], axis=-1)
        levels.append(boxes.reshape(-1, 4))
    anchors = np.concatenate(levels).astype(np.float32)
    anchors.flags.writeable = False
    return anchors
