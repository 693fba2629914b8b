"""Class-wise non-maximum suppression, same results as torchvision's ``batched_nms``.

Greedy NMS is sequential by definition; here it is computed without a Python loop over
boxes. Boxes are taken in blocks (bounded memory for any count): a block is first
suppressed by the boxes already kept, then resolved internally by iterating
``keep[j] = alive[j] and no kept i < j overlaps j`` to its fixed point, which is the
greedy answer (entry j only depends on entries before it, so the first k entries are
final after k rounds; real scenes need a handful of rounds).

In numpy on the host for every device: NMS sees at most a few thousand candidates, where
each torch operation costs more in dispatch (and on CUDA in a sync per round) than in
arithmetic. Torch tensors are accepted and answered in kind.
"""
from __future__ import annotations

import numpy as np
import torch

BLOCK = 1024


def box_iou(a, b):
    """IoU matrix [len(a), len(b)] of xyxy boxes; area without +1 (torchvision). Tensors
    give a tensor, numpy arrays an array."""
    if isinstance(a, torch.Tensor):
        return torch.from_numpy(box_iou(a.detach().cpu().numpy(),
                                        torch.as_tensor(b).detach().cpu().numpy()))
    b = np.asarray(b, a.dtype)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    # One [len(a), len(b)] operation per coordinate: broadcasting over a trailing axis
    # of 2 runs numpy's inner loops 2 elements at a time, several times slower.
    w = np.minimum(a[:, 2, None], b[:, 2]) - np.maximum(a[:, 0, None], b[:, 0])
    h = np.minimum(a[:, 3, None], b[:, 3]) - np.maximum(a[:, 1, None], b[:, 1])
    inter = np.clip(w, 0, None, out=w) * np.clip(h, 0, None, out=h)
    # 0/0 for degenerate boxes gives NaN, which never exceeds the threshold (as torchvision).
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def _overlaps(a: np.ndarray, a_cls: np.ndarray | None, b: np.ndarray,
              b_cls: np.ndarray | None, iou_threshold: float) -> np.ndarray:
    hit = box_iou(a, b) > iou_threshold
    if a_cls is not None:
        hit &= a_cls[:, None] == b_cls[None, :]
    return hit


def batched_nms(boxes, scores, classes, iou_threshold: float):
    """Indices of the kept boxes, in descending score order (ties: lower index first).

    A box is suppressed by a higher-ranked kept box of the same class with IoU > threshold.
    numpy arrays give an int64 array; torch tensors an int64 tensor on their device.
    """
    if isinstance(boxes, torch.Tensor):
        keep = batched_nms(*(torch.as_tensor(x).detach().cpu().numpy()
                             for x in (boxes, scores, classes)), iou_threshold)
        return torch.from_numpy(keep).to(boxes.device)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # float32 like the reference (and float64 stays float64): the IoU comparisons agree.
    boxes = np.asarray(boxes, np.result_type(boxes.dtype, np.float32))
    order = np.argsort(-np.asarray(scores), kind="stable")
    boxes = boxes[order]
    # One class (the released model's case): no class mask needed.
    classes = np.asarray(classes)[order]
    classes = classes if classes.min() != classes.max() else None
    keep = np.zeros(len(order), bool)
    for start in range(0, len(order), BLOCK):
        stop = min(start + BLOCK, len(order))
        blk = boxes[start:stop]
        blk_cls = classes[start:stop] if classes is not None else None
        alive = np.ones(stop - start, bool)
        kept = np.flatnonzero(keep[:start])
        if len(kept):
            kept_cls = classes[kept] if classes is not None else None
            alive = ~_overlaps(boxes[kept], kept_cls, blk, blk_cls, iou_threshold).any(axis=0)
        # suppresses[i, j] = 1: i ranks above j, same class, overlapping. A float matrix:
        # the fixed-point step is then a mat-vec, faster than boolean reductions.
        suppresses = np.triu(_overlaps(blk, blk_cls, blk, blk_cls, iou_threshold), 1)
        suppresses = suppresses.astype(np.float32)
        current = alive
        for _ in range(stop - start):
            following = alive & ~((current.astype(np.float32) @ suppresses) > 0)
            if np.array_equal(following, current):
                break
            current = following
        keep[start:stop] = current
    return order[keep].astype(np.int64)
