"""Vectorised NMS against a plain greedy loop (torchvision's batched_nms semantics)."""
import numpy as np
import pytest
import torch

from hybridnets_ros.core import nms


def greedy_reference(boxes, scores, classes, threshold):
    """The textbook loop: highest score first (stable on ties), suppress same-class IoU > t."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable
    boxes = boxes.astype(np.float32)
    keep = []
    for i in order:
        x1, y1, x2, y2 = boxes[i]
        area_i = (x2 - x1) * (y2 - y1)
        suppressed = False
        for j in keep:
            if classes[j] != classes[i]:
                continue
            a1, b1, a2, b2 = boxes[j]
            w = max(np.float32(0), min(x2, a2) - max(x1, a1))
            h = max(np.float32(0), min(y2, b2) - max(y1, b1))
            inter = w * h
            union = (a2 - a1) * (b2 - b1) + area_i - inter
            if union > 0 and inter / union > threshold:
                suppressed = True
                break
        if not suppressed:
            keep.append(i)
    return keep


def random_case(rng, n, num_classes, score_levels=None):
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(1, 60, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    if score_levels:  # few distinct values: many exact ties
        scores = rng.integers(0, score_levels, n) / score_levels
    else:
        scores = rng.uniform(0, 1, n)
    return boxes, scores.astype(np.float32), rng.integers(0, num_classes, n)


@pytest.mark.parametrize("n, num_classes, levels, seeds", [
    (1, 1, None, 3), (40, 1, None, 6), (300, 1, None, 6), (300, 3, None, 6), (300, 2, 5, 6),
    pytest.param(2500, 4, 20, 1, marks=pytest.mark.slow),  # the reference loop is quadratic
])
def test_matches_greedy_loop(n, num_classes, levels, seeds):
    for seed in range(seeds):
        _check_case(seed, n, num_classes, levels)


def _check_case(seed, n, num_classes, levels):
    rng = np.random.default_rng(seed)
    boxes, scores, classes = random_case(rng, n, num_classes, levels)
    if n > 10:  # exact duplicates: the lower index must win
        boxes[5], scores[5], classes[5] = boxes[3], scores[3], classes[3]
    for threshold in (0.3, 0.5):
        expected = greedy_reference(boxes, scores, classes, threshold)
        got = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                              torch.from_numpy(classes), threshold)
        assert got.tolist() == expected


def test_classes_never_suppress_each_other():
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms.batched_nms(boxes, scores, torch.tensor([0, 1, 0]), 0.5).tolist() == [0, 1]


def test_empty_and_degenerate_boxes():
    empty = nms.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.3)
    assert empty.numel() == 0 and empty.dtype == torch.int64
    # zero-area boxes have IoU 0/0 = NaN with everything: never suppressed (as torchvision)
    boxes = torch.tensor([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10.]])
    kept = nms.batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.zeros(3, dtype=torch.long), 0.3)
    assert kept.tolist() == [0, 1, 2]


def test_more_boxes_than_one_block():
    rng = np.random.default_rng(7)
    boxes, scores, classes = random_case(rng, nms.BLOCK * 2 + 17, 1)
    expected = greedy_reference(boxes, scores, classes, 0.3)
    got = nms.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores),
                          torch.from_numpy(classes), 0.3)
    assert got.tolist() == expected
