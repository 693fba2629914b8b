"""Class-wise non-maximum suppression, same results as torchvision's ``batched_nms``.

Greedy NMS is sequential by definition; here it is computed without a Python loop over
boxes. Boxes are taken in blocks (bounded memory for any count): a block is first
suppressed by the boxes already kept, then resolved internally by iterating
``keep[j] = alive[j] and no kept i < j overlaps j`` to its fixed point, which is the
greedy answer (entry j only depends on entries before it, so the first k entries are
final after k rounds; real scenes need a handful of rounds).
"""
from __future__ import annotations

import numpy as np
import torch

BLOCK = 1024


def box_iou(a, b):
    """IoU matrix [len(a), len(b)] of xyxy boxes; area without +1 (torchvision). Tensors
    give a tensor, numpy arrays an array."""
    if isinstance(a, np.ndarray):
        return box_iou(torch.from_numpy(a), torch.from_numpy(np.asarray(b, a.dtype))).numpy()
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp_(min=0)
    inter = wh[..., 0] * wh[..., 1]
    # 0/0 for degenerate boxes gives NaN, which never exceeds the threshold (as torchvision).
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _overlaps(a: torch.Tensor, a_cls: torch.Tensor | None, b: torch.Tensor,
              b_cls: torch.Tensor | None, iou_threshold: float) -> torch.Tensor:
    hit = box_iou(a, b) > iou_threshold
    if a_cls is not None:
        hit &= a_cls[:, None] == b_cls[None, :]
    return hit


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """Indices of the kept boxes, in descending score order (ties: lower index first).

    A box is suppressed by a higher-ranked kept box of the same class with IoU > threshold.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes = boxes[order]
    # One class (the released model's case): no class mask needed.
    classes = classes[order] if bool(classes.min() != classes.max()) else None
    keep = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    for start in range(0, len(order), BLOCK):
        stop = min(start + BLOCK, len(order))
        blk = boxes[start:stop]
        blk_cls = classes[start:stop] if classes is not None else None
        alive = torch.ones(stop - start, dtype=torch.bool, device=boxes.device)
        kept = keep[:start].nonzero().squeeze(1)
        if len(kept):
            kept_cls = classes[kept] if classes is not None else None
            alive = ~_overlaps(boxes[kept], kept_cls, blk, blk_cls, iou_threshold).any(dim=0)
        # suppresses[i, j] = 1: i ranks above j, same class, overlapping. A float matrix:
        # the fixed-point step is then a mat-vec, faster than boolean reductions.
        suppresses = _overlaps(blk, blk_cls, blk, blk_cls, iou_threshold).triu_(diagonal=1)
        suppresses = suppresses.to(boxes.dtype)
        current = alive
        for _ in range(stop - start):
            following = alive & ~((current.to(boxes.dtype) @ suppresses) > 0)
            if torch.equal(following, current):
                break
            current = following
        keep[start:stop] = current
    return order[keep]
