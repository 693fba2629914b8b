"""What every network's post-processing shares: the detections type, their default cap,
the candidate budget of NMS, host/tensor conversions and class-map helpers (each network's
folder turns its raw outputs into these)."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

# Detections kept per image, highest scores first: EfficientDet's (HybridNets' detector)
# max_instances_per_image and COCO's maxDets. The reference keeps every NMS survivor.
MAX_DETECTIONS = 100
# NMS runs on at most this many best-scoring candidates per detection wanted: with a
# threshold near 0 every anchor is a candidate, and NMS over all of them does not fit a
# frame (docs/benchmarks.md). The result is the reference's first max_detections
# whenever NMS keeps that many among these candidates (or they were not cut at all).
CANDIDATES_PER_DETECTION = 30


@dataclass
class Detections:
    boxes: np.ndarray    # [n, 4] float32 (x1, y1, x2, y2) in source-image pixels
    scores: np.ndarray   # [n] float32, descending
    classes: np.ndarray  # [n] int64 class indices

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def host_array(x) -> np.ndarray:
    """A numpy view (CPU tensors, arrays) or host copy (device tensors) of ``x``."""
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def first_argmax(scores: np.ndarray) -> np.ndarray:
    """uint8 [H, W] index of the highest of [S, H, W] scores, the first on ties (as
    argmax): a running "strictly greater" in OpenCV's vectorised operations, several
    times faster than numpy's argmax over a short leading axis."""
    labels = np.zeros(scores.shape[1:], np.uint8)
    above = np.empty_like(labels)
    best = scores[0]
    for k in range(1, scores.shape[0]):
        cv2.compare(scores[k], best, cv2.CMP_GT, dst=above)  # 255 where class k leads
        # where(above, k, labels) = max(labels, above & k): every label so far is below k
        cv2.max(labels, cv2.bitwise_and(above, k), dst=labels)
        if k + 1 < len(scores):
            best = cv2.max(best, scores[k])  # a new array: ``scores`` is never written
    return labels


def max_softmax(scores: np.ndarray) -> np.ndarray:
    """uint8 [H, W] probability (0-255) of the highest of [S, H, W] float32 logits under
    their softmax: 1 / sum_k exp(l_k - l_max), plane by plane in OpenCV (its exp is
    several times faster than numpy's or torch's here)."""
    top = scores[0].copy()
    for plane in scores[1:]:
        cv2.max(top, plane, dst=top)
    total = np.zeros_like(top)
    shifted = np.empty_like(top)
    for plane in scores:
        cv2.exp(cv2.subtract(plane, top, dst=shifted), dst=shifted)
        cv2.add(total, shifted, dst=total)
    return probability_u8(cv2.divide(1.0, total, dst=total))


def probability_u8(probability: np.ndarray) -> np.ndarray:
    """uint8 of probabilities in [0, 1] scaled to 0-255 (rounded; cv2 saturates)."""
    return cv2.convertScaleAbs(probability, alpha=255.0)


@lru_cache(maxsize=16)
def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    # OpenCV's INTER_NEAREST: source index floor(d * (1 / (dst / src))) in double.
    index = np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64), src - 1)
    return torch.from_numpy(index).to(device)


def resize_nearest(labels: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(..., INTER_NEAREST) of a 2-D tensor, on the tensor's device."""
    rows = _nearest_index(labels.shape[0], size_hw[0], labels.device)
    cols = _nearest_index(labels.shape[1], size_hw[1], labels.device)
    return labels.index_select(0, rows).index_select(1, cols)
