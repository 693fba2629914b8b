"""Class-wise non-maximum suppression, same results as torchvision's ``batched_nms``, and
the overlapping pairs of boxes that it and the tracker score.

Neither compares every box with every other. Two boxes with IoU above t > 0 have widths
(and heights) within a factor 1/t of each other and centres no farther apart than their
sizes allow, so :func:`overlapping_pairs` groups the boxes by class and by the binary
order of magnitude of their width and height, lets only groups of nearby magnitudes meet,
and there only boxes in neighbouring cells of a grid as fine as that distance (one sort
and binary searches for all group pairs at once). Work and memory grow with the number
of boxes and of such pairs, not with the square of the number of boxes: NMS of the 46,035
candidates of a 640x384 input at a score threshold of 0 scores 1.4 M pairs, not the 302 M
of candidates x kept boxes before (docs/benchmarks.md).

Greedy NMS is sequential by definition; here it runs without a Python loop over boxes.
Boxes are taken in blocks in score order: a block's boxes overlapping a box kept before it
are suppressed, and the rest are resolved by iterating ``keep[j] = no kept i ranked above
j overlaps j`` over their overlapping pairs to its fixed point, which is the greedy answer
(entry j only depends on entries before it, so the first k entries are final after k
rounds; real scenes need a handful). Blocks bound the memory even where every box overlaps
every other (a pile of identical boxes), where all pairs at once would not fit.

In numpy on the host for every device: each torch operation would cost more in dispatch
(and on CUDA in a sync per round) than in arithmetic. Torch tensors are accepted and
answered in kind.
"""
from __future__ import annotations

import numpy as np
import torch

# Sets with at most this many box pairs are scored all at once, group pairs with at most
# _DIRECT_PAIRS without the grid.
_DENSE_PAIRS = 1 << 16
_DIRECT_PAIRS = 256
# Boxes NMS takes at once, in score order (46,035 candidates at IoU 0.3: 1024 took 1.25 s,
# 2048 0.76 s, 4096 0.89 s; a pile of 46,035 identical boxes peaks at 28, 86, 454 MiB).
BLOCK = 2048
# Candidate pairs scored at once (~100 bytes each): memory stays bounded even for boxes
# piled on one another (a score threshold of 0 with an NMS IoU threshold of 1).
_CHUNK_PAIRS = 1 << 18
# Grid cells per axis at most (tiny boxes far apart get coarser cells): with the group
# pair's index the keys of the cells fit in 63 bits.
_CELL_BITS = 20


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


def pair_iou(a: np.ndarray, b: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """IoU of the boxes ``a[i]`` and ``b[j]`` pair by pair, each value exactly the entry
    ``box_iou(a, b)[i, j]`` (the same operations in the same order and type)."""
    b = np.asarray(b, a.dtype)
    return _pair_iou(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), i, j)


def _pair_iou(a_t: np.ndarray, b_t: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """:func:`pair_iou` of the transposed [4, N] boxes: gathers from contiguous rows."""
    ax1, ay1, ax2, ay2 = a_t[0][i], a_t[1][i], a_t[2][i], a_t[3][i]
    bx1, by1, bx2, by2 = b_t[0][j], b_t[1][j], b_t[2][j], b_t[3][j]
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    w = np.minimum(ax2, bx2, out=ax2) - np.maximum(ax1, bx1, out=ax1)
    h = np.minimum(ay2, by2, out=ay2) - np.maximum(ay1, by1, out=ay1)
    inter = np.clip(w, 0, None, out=w) * np.clip(h, 0, None, out=h)
    with np.errstate(invalid="ignore", divide="ignore"):
        return inter / (area_a + area_b - inter)


class _SizeGroups:
    """The boxes of one set with a positive, finite width and height (no other box can
    overlap another) grouped by class and by the exponents ``ew``, ``eh`` of their width
    and height (2**(e-1) <= size < 2**e)."""

    def __init__(self, boxes: np.ndarray, codes: np.ndarray):
        """``codes``: class codes 0, 1, ... of the boxes."""
        x1, y1, x2, y2 = (boxes[:, k].astype(np.float64) for k in range(4))
        w, h = x2 - x1, y2 - y1
        rows = np.flatnonzero(np.isfinite(w) & np.isfinite(h) & (w > 0) & (h > 0))
        ew, eh = np.frexp(w[rows])[1], np.frexp(h[rows])[1]
        # exponents of float64 lie in [-1073, 1024]
        key = (codes[rows] * 4096 + ew + 2048) * 4096 + eh + 2048
        order = np.argsort(key, kind="stable")
        keys, starts = np.unique(key[order], return_index=True)
        self.rows = rows[order]                     # box indices, group after group
        self.bounds = np.append(starts, len(order))
        self.cls = keys // 4096 ** 2
        self.ew, self.eh = (keys // 4096) % 4096 - 2048, keys % 4096 - 2048
        self.cx = ((x1 + x2) / 2)[self.rows]
        self.cy = ((y1 + y2) / 2)[self.rows]

    def __len__(self) -> int:
        return len(self.cls)



def overlapping_pairs(a: np.ndarray, b: np.ndarray | None, min_iou: float, *,
                      strict: bool, classes_a: np.ndarray | None = None,
                      classes_b: np.ndarray | None = None, most: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, iou) of every pair of boxes ``a[i]``, ``b[j]`` (xyxy; of the same class when
    classes are given) that overlap with IoU > ``min_iou`` (``strict``) or >= it (then
    ``min_iou`` must be positive: IoU >= 0 holds for every pair). ``b`` None: the pairs
    i < j within ``a``. IoUs are :func:`pair_iou`'s, so exactly ``box_iou``'s entries.
    ``most``: of each box a[i] only its ``most`` pairs of highest IoU (ties: lower j), so
    that the memory stays bounded whatever the overlaps."""
    if not strict and min_iou <= 0:
        raise ValueError("IoU >= 0 holds for every pair: ask for min_iou > 0 or strict")
    same = b is None
    b = a if same else np.asarray(b, a.dtype)
    if (strict and min_iou >= 1) or min_iou > 1:  # nothing can pass
        empty = np.zeros(0, np.intp)
        return empty, empty, np.zeros(0, a.dtype)
    if len(a) * len(b) <= _DENSE_PAIRS:  # few boxes: every pair at once
        iou = box_iou(a, b)
        passed = iou > min_iou if strict else iou >= min_iou
        if classes_a is not None:
            classes_b = classes_a if same else classes_b
            passed &= np.asarray(classes_a)[:, None] == np.asarray(classes_b)[None, :]
        i, j = np.nonzero(np.triu(passed, 1) if same else passed)
        return _best(i, j, iou[i, j], most)
    codes_a, codes_b = np.zeros(len(a), np.int64), np.zeros(len(b), np.int64)
    if classes_a is not None:
        values = np.unique(np.concatenate([classes_a, classes_a if same else classes_b]))
        codes_a = np.searchsorted(values, classes_a)
        codes_b = codes_a if same else np.searchsorted(values, classes_b)
    groups_a = _SizeGroups(a, codes_a)
    groups_b = groups_a if same else _SizeGroups(b, codes_b)
    # Overlapping with IoU >= t means the overlap's width w_I >= t * max(w_a, w_b), so the
    # widths are within 1/t of each other and |centre_a - centre_b| <= (w_a + w_b) / 2 -
    # w_I <= (w_a + w_b) / 2 - t * max(w_a, w_b) (which grows with both widths for t <= 1/2).
    span = np.inf if min_iou <= 0 else 1 + np.log2(1 / min_iou)
    shrink = min(min_iou, 0.5)
    a_t, b_t = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
    found = []  # (i, j, iou) of the pairs passed so far, and how many
    size = 0

    def score(i: np.ndarray, j: np.ndarray) -> None:
        nonlocal found, size
        iou = _pair_iou(a_t, b_t, i, j)
        passed = iou > min_iou if strict else iou >= min_iou
        found.append((i[passed], j[passed], iou[passed]))
        size += int(passed.sum())
        if most is not None and size > 2 * most * len(a):
            found = [_best(*_joined(found, a.dtype), most)]
            size = len(found[0][0])

    # Every compatible (group of a, group of b); of one set each pair of groups once.
    compatible = ((groups_a.cls[:, None] == groups_b.cls[None, :])
                  & (np.abs(groups_a.ew[:, None] - groups_b.ew[None, :]) <= span)
                  & (np.abs(groups_a.eh[:, None] - groups_b.eh[None, :]) <= span))
    ga, gb = np.nonzero(np.triu(compatible) if same else compatible)
    wa, wb = np.ldexp(1.0, groups_a.ew[ga]), np.ldexp(1.0, groups_b.ew[gb])
    ha, hb = np.ldexp(1.0, groups_a.eh[ga]), np.ldexp(1.0, groups_b.eh[gb])
    # the farthest centres apart per axis, with slack for the rounding of the centres
    rx = ((wa + wb) / 2 - shrink * np.maximum(wa, wb)) * (1 + 1e-6)
    ry = ((ha + hb) / 2 - shrink * np.maximum(ha, hb)) * (1 + 1e-6)
    start_a, count_a = groups_a.bounds[ga], np.diff(groups_a.bounds)[ga]
    start_b, count_b = groups_b.bounds[gb], np.diff(groups_b.bounds)[gb]
    product = count_a * count_b

    def close(i, j, pair):
        """Score the candidates (positions i, j in the groups' order) close enough."""
        keep = ((np.abs(groups_a.cx[i] - groups_b.cx[j]) <= rx[pair])
                & (np.abs(groups_a.cy[i] - groups_b.cy[j]) <= ry[pair]))
        i, j = groups_a.rows[i], groups_b.rows[j]
        if same:  # each pair once, as (lower index, higher index)
            keep &= (ga[pair] != gb[pair]) | (i < j)
            i, j = np.minimum(i, j), np.maximum(i, j)
        score(i[keep], j[keep])

    # Small group pairs: every box pair.
    small = np.flatnonzero(product <= _DIRECT_PAIRS)
    for pair, k in _runs(small, product[small]):
        close(start_a[pair] + k // count_b[pair], start_b[pair] + k % count_b[pair], pair)
    # Large ones: on a grid of rx x ry cells per group pair, each box a's candidates are
    # the boxes b of the 3 x 3 cells around it; all group pairs through one sort, the
    # group pair's index the high part of each cell's key.
    large = np.flatnonzero(product > _DIRECT_PAIRS)
    if len(large) == 0:
        return _best(*_joined(found, a.dtype), most)
    extent = max(np.ptp(groups_a.cx), np.ptp(groups_a.cy), np.ptp(groups_b.cx),
                 np.ptp(groups_b.cy), 1.0)
    x0 = min(groups_a.cx.min(), groups_b.cx.min())
    y0 = min(groups_a.cy.min(), groups_b.cy.min())
    width = np.maximum(rx, extent / 2**_CELL_BITS)
    height = np.maximum(ry, extent / 2**_CELL_BITS)
    bits = _CELL_BITS + 1  # a margin cell on each side

    def cells(pair, position, groups):
        column = ((groups.cx[position] - x0) // width[pair]).astype(np.int64) + 1
        row = ((groups.cy[position] - y0) // height[pair]).astype(np.int64) + 1
        return (np.searchsorted(batch, pair) << 2 * bits) + (column << bits) + row

    # group pairs in batches of about _CHUNK_PAIRS boxes (bounded memory; fewer than
    # 2**20 group pairs, so that the keys fit)
    for batch, _ in _runs(large, np.minimum(count_a[large] + count_b[large], _CHUNK_PAIRS),
                          unit=True):
        b_pair, k = _members(batch, count_b[batch])
        b_position = start_b[b_pair] + k
        b_key = cells(b_pair, b_position, groups_b)
        order = np.argsort(b_key, kind="stable")
        b_key, b_position = b_key[order], b_position[order]
        a_pair, k = _members(batch, count_a[batch])
        a_position = start_a[a_pair] + k
        # per box a, 3 runs of cells: the columns left, same and right, each its rows
        # above to below
        a_key = (cells(a_pair, a_position, groups_a)[:, None]
                 + (np.array([-1, 0, 1]) << bits)).ravel()
        first = np.searchsorted(b_key, a_key - 1, "left")
        count = np.searchsorted(b_key, a_key + 1, "right") - first
        for run, k in _runs(np.arange(len(count)), count):
            close(a_position[run // 3], b_position[first[run] + k], a_pair[run // 3])
    return _best(*_joined(found, a.dtype), most)


def _members(items: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item, k) for each item and k in range(its count), as two arrays."""
    item = np.repeat(items, counts)
    return item, np.arange(len(item)) - np.repeat(np.cumsum(counts) - counts, counts)


def _runs(items: np.ndarray, counts: np.ndarray, unit: bool = False):
    """:func:`_members` of ``items`` in chunks of about _CHUNK_PAIRS members (at least one
    item); ``unit``: (the chunk's items, their counts) instead."""
    ends = np.cumsum(counts)
    start = 0
    while start < len(items):
        stop = max(int(np.searchsorted(ends, ends[start] - counts[start] + _CHUNK_PAIRS,
                                       "right")), start + 1)
        yield ((items[start:stop], counts[start:stop]) if unit
               else _members(items[start:stop], counts[start:stop]))
        start = stop


def _joined(found: list, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (i, j, iou) triples found, as three arrays."""
    if not found:
        return np.zeros(0, np.intp), np.zeros(0, np.intp), np.zeros(0, dtype)
    return tuple(np.concatenate(part) for part in zip(*found))


def _best(i: np.ndarray, j: np.ndarray, iou: np.ndarray, most: int | None
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of each i its ``most`` pairs of highest IoU (ties: lower j); None: all of them."""
    if most is None or len(i) <= most:
        return i, j, iou
    order = np.lexsort((j, -iou, i))
    i, j, iou = i[order], j[order], iou[order]
    first = np.searchsorted(i, i, "left")  # where each i's pairs start
    keep = np.arange(len(i)) - first < most
    return i[keep], j[keep], iou[keep]


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
    # One class (the released model's case): no class grouping needed.
    classes = np.asarray(classes)[order]
    classes = classes if classes.min() != classes.max() else None
    keep = np.zeros(len(order), bool)
    for start in range(0, len(order), BLOCK):
        stop = min(start + BLOCK, len(order))
        block = slice(start, stop)
        block_classes = None if classes is None else classes[block]
        # suppressed by a box kept before the block (one such pair is enough)
        alive = np.ones(stop - start, bool)
        kept = np.flatnonzero(keep[:start])
        if len(kept):
            hit, _, _ = overlapping_pairs(boxes[block], boxes[kept], iou_threshold, strict=True,
                                          classes_a=block_classes,
                                          classes_b=None if classes is None else classes[kept],
                                          most=1)
            alive[hit] = False
        # within the block, among those left (a suppressed box suppresses nothing): i
        # ranks above j
        left = np.flatnonzero(alive)
        higher, lower, _ = overlapping_pairs(boxes[block][left], None, iou_threshold,
                                             strict=True, classes_a=None if classes is None
                                             else block_classes[left])
        higher, lower = left[higher], left[lower]
        current = alive
        for _ in range(stop - start):
            following = alive.copy()
            following[lower[current[higher]]] = False
            if np.array_equal(following, current):
                break
            current = following
        keep[block] = current
    return order[keep].astype(np.int64)
