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


def test_many_boxes_through_the_grid_in_chunks(monkeypatch):
    """Past a few hundred boxes pairs come from the size groups and their grid; tiny
    chunks check that splitting the candidates changes nothing."""
    rng = np.random.default_rng(7)
    boxes, scores, classes = random_case(rng, 2065, 3)
    boxes[100:140] = boxes[100]  # a pile of identical boxes
    boxes[200:220, 2] = boxes[200:220, 0]  # zero width
    boxes[300:320, 2:] = boxes[300:320, :2] - 5  # inverted
    for threshold in (0.0, 0.3, 0.7):
        expected = greedy_reference(boxes, scores, classes, threshold)
        for chunk in (nms._CHUNK_PAIRS, 1000):
            monkeypatch.setattr(nms, "_CHUNK_PAIRS", chunk)
            got = nms.batched_nms(boxes, scores, classes, threshold)
            assert got.tolist() == expected, (threshold, chunk)


@pytest.mark.parametrize("strict, threshold", [(True, 0.0), (True, 0.3), (False, 0.1),
                                               (False, 0.5), (True, 1.0)])
def test_overlapping_pairs_are_every_pair_above_the_threshold(strict, threshold):
    rng = np.random.default_rng(3)
    for n, m, scale in ((700, 900, 1.0), (400, 0, 1.0), (300, 500, 1e-4), (300, 500, 1e4)):
        a, _, classes_a = random_case(rng, n, 2)
        b, _, classes_b = random_case(rng, m, 2) if m else (None, None, None)
        a = a.astype(np.float64) * scale
        a[:3, 0] += 1e6 * scale  # far away: cells grow so that the keys fit
        if b is not None:
            b = b.astype(np.float64) * scale
        i, j, iou = nms.overlapping_pairs(a, b, threshold, strict=strict,
                                          classes_a=classes_a, classes_b=classes_b)
        full = nms.box_iou(a, a if b is None else b)
        expected = (full > threshold if strict else full >= threshold)
        expected &= classes_a[:, None] == (classes_a if b is None else classes_b)[None, :]
        if b is None:
            expected = np.triu(expected, 1)
        assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(*np.nonzero(expected)))
        np.testing.assert_array_equal(iou, full[i, j])  # the same values, to the bit


def test_overlapping_pairs_scale_with_the_pairs_not_the_square(monkeypatch):
    """10,000 boxes against 10,000 (a 1280x720 image full of small ones): the candidates
    scored are a small multiple of the pairs found, not the 100 M pairs of boxes."""
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, [1280, 720], (10_000, 2))
    a = np.concatenate([xy, xy + rng.uniform(4, 24, (10_000, 2))], 1)
    b = a + rng.uniform(-3, 3, a.shape)
    scored = []
    original = nms._pair_iou
    monkeypatch.setattr(nms, "_pair_iou",
                        lambda *args: scored.append(len(args[2])) or original(*args))
    i, j, _ = nms.overlapping_pairs(a, b, 0.1, strict=False)
    assert len(i) >= 10_000 and sum(scored) < 20 * len(i)


def test_nms_over_every_anchor_scores_pairs_in_proportion(monkeypatch):
    """A score threshold of 0 sends every anchor to NMS (46,035 at 640x384): the IoUs it
    computes grow with the candidates, not with candidates x kept boxes (which took tens
    of seconds a frame)."""
    rng = np.random.default_rng(11)
    n = 20_000
    xy = rng.uniform(0, [640, 384], (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(8, 40, (n, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    computed = []
    box_iou, pair_iou = nms.box_iou, getattr(nms, "_pair_iou", None)
    monkeypatch.setattr(nms, "box_iou",
                        lambda a, b: computed.append(len(a) * len(b)) or box_iou(a, b))
    monkeypatch.setattr(nms, "_pair_iou",
                        lambda *args: computed.append(len(args[2])) or pair_iou(*args),
                        raising=False)
    kept = nms.batched_nms(boxes, scores, np.zeros(n, np.int64), 0.3)
    assert 1000 < len(kept) < n and sum(computed) < 300 * n, sum(computed) / n


@pytest.mark.parametrize("pile", [True, False])
def test_nms_memory_stays_bounded_where_boxes_overlap_everywhere(pile):
    """Identical boxes (every pair overlaps) and, at a threshold of 0, any two boxes that
    touch: the pairs are taken block by block, never all at once."""
    import tracemalloc
    rng = np.random.default_rng(2)
    n = 20_000
    if pile:
        boxes = np.tile(np.array([[100, 100, 150, 140]], np.float32), (n, 1))
    else:
        xy = rng.uniform(0, [640, 384], (n, 2)).astype(np.float32)
        boxes = np.concatenate([xy, xy + rng.uniform(8, 80, (n, 2)).astype(np.float32)], 1)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    tracemalloc.start()
    try:
        kept = nms.batched_nms(boxes, scores, np.zeros(n, np.int64), 0.3 if pile else 0.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (len(kept) == 1) if pile else (0 < len(kept) < n)
    assert peak < 128 * 2**20, f"{peak / 2**20:.0f} MiB"
