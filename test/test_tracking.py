"""The tracker's association against the dense one it replaced (every track scored against
every detection, scipy's linear_sum_assignment), and at scale.

The contract is the gates and the cost (core.tracking.Tracker): a same-class pair may
match when IoU >= min_iou or the ground distance <= max_distance_m; among the matchings
with the most pairs the assignment minimises the sum of (1 - IoU) + min(distance /
max_distance_m, 1). Where that optimum is unique (continuous random scenes) the matches
must be the same; where scenes have ties (boxes and positions on a coarse lattice, min_iou
0 where most pairs cost exactly 2) any optimum will do: the same number of matches and
the same total cost.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from hybridnets_ros.core import tracking
from hybridnets_ros.core.nms import box_iou
from hybridnets_ros.core.tracking import Tracker


def dense_reference(boxes0, classes0, ground0, boxes1, classes1, ground1, min_iou, max_distance):
    """The association as it was: dense [tracks x detections] gates and costs."""
    iou = np.nan_to_num(box_iou(boxes0, boxes1))
    distance = np.hypot(ground0[:, 0, None] - ground1[:, 0], ground0[:, 1, None] - ground1[:, 1])
    known = np.isfinite(distance)
    allowed = (classes0[:, None] == classes1[None, :]) & (
        (iou >= min_iou) | (known & (distance <= max_distance)))
    cost = (1.0 - iou) + np.where(known, np.minimum(distance / max_distance, 1.0), 1.0)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, 1e6))
    keep = allowed[rows, cols]
    return rows[keep], cols[keep], cost, allowed


def scene(rng, n, classes, lattice=False):
    xy = rng.uniform(0, 600, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (n, 2))], 1)
    ground = np.column_stack([rng.uniform(0, 60, n), rng.uniform(-15, 15, n)])
    if lattice:  # exact ties: equal boxes, equal distances
        boxes, ground = np.round(boxes / 20) * 20, np.round(ground)
    ground[rng.random(n) < 0.3] = np.nan  # no ground contact (beyond range, no camera)
    return boxes, rng.integers(0, classes, n), ground


def tracked(case, min_iou, max_distance=3.0):
    """(track rows, detection columns) the Tracker matched: tracks start in the first
    update with ids 1..n (rows 0..n-1, no velocity yet: predicted where they were)."""
    (boxes0, classes0, ground0), (boxes1, classes1, ground1) = case
    tracker = Tracker(min_iou=min_iou, max_distance_m=max_distance)
    first_ids = tracker.update(boxes0, classes0, ground0, 0.0)
    assert first_ids.tolist() == list(range(1, len(boxes0) + 1))
    ids = tracker.update(boxes1, classes1, ground1, 0.1)
    cols = np.flatnonzero(ids <= len(boxes0))
    return ids[cols] - 1, cols


def random_case(seed, lattice=False, degenerate=False):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(1, 150, 2)
    classes = int(rng.integers(1, 4))
    first, second = scene(rng, n, classes, lattice), scene(rng, m, classes, lattice)
    if degenerate:
        boxes = second[0]
        boxes[: m // 4, 2] = boxes[: m // 4, 0]                  # zero width
        boxes[m // 4: m // 3, 2:] = boxes[m // 4: m // 3, :2] - 3  # inverted
        boxes[-2:] = first[0][:1]                                  # duplicates of a track
    return first, second


@pytest.mark.parametrize("min_iou", [0.1, 0.3, 0.02])
@pytest.mark.parametrize("few_compared_directly", [True, False])
def test_same_matches_as_the_dense_assignment(min_iou, few_compared_directly, monkeypatch):
    """Both ways to the pairs: every pair of a small frame at once, and the candidate
    search (here also on small frames)."""
    if not few_compared_directly:
        monkeypatch.setattr(tracking, "DENSE_PAIRS", -1)
    for seed in range(40):
        case = random_case(seed)
        rows, cols = tracked(case, min_iou)
        ref_rows, ref_cols, _, _ = dense_reference(*case[0], *case[1], min_iou, 3.0)
        assert sorted(zip(rows.tolist(), cols.tolist())) == sorted(
            zip(ref_rows.tolist(), ref_cols.tolist())), seed


@pytest.mark.parametrize("min_iou, lattice, degenerate", [
    (0.1, True, False), (0.1, False, True), (0.0, False, False), (0.0, True, True)])
def test_as_good_as_the_dense_assignment_with_ties_and_degenerate_boxes(min_iou, lattice,
                                                                          degenerate):
    for seed in range(40):
        case = random_case(seed, lattice, degenerate)
        rows, cols = tracked(case, min_iou)
        ref_rows, ref_cols, cost, allowed = dense_reference(*case[0], *case[1], min_iou, 3.0)
        assert allowed[rows, cols].all(), seed
        assert len(set(rows.tolist())) == len(rows) and len(set(cols.tolist())) == len(cols)
        assert len(rows) == len(ref_rows), seed
        assert cost[rows, cols].sum() == pytest.approx(cost[ref_rows, ref_cols].sum(), abs=1e-9)


def spread_scene(rng, n):
    """n objects on a jittered grid filling a 1280x720 image (no two boxes overlap) and
    4 m apart on the ground, and the same objects a frame later, moved a little."""
    columns = int(np.ceil(np.sqrt(n * 16 / 9)))
    row, column = np.divmod(np.arange(n), columns)
    cell_w, cell_h = 1280 / columns, 720 / np.ceil(n / columns)
    x = column * cell_w + rng.uniform(0, 0.2 * cell_w, n)
    y = row * cell_h + rng.uniform(0, 0.2 * cell_h, n)
    boxes = np.column_stack([x, y, x + 0.75 * cell_w, y + 0.75 * cell_h])
    ground = np.column_stack([column * 4.0, row * 4.0]) + rng.normal(0, 0.2, (n, 2))
    classes = np.zeros(n, np.int64)
    moved = (boxes + rng.uniform(-1, 1, boxes.shape), classes,
             ground + rng.normal(0, 0.3, ground.shape))
    return (boxes, classes, ground), moved


@pytest.mark.parametrize("n", [3000, 10_000])
def test_thousands_of_tracks_and_detections_in_bounded_memory(n):
    """The dense association held several [tracks x detections] float arrays: 369 MB at
    3,000 and 3.4 GB at 8,716 detections."""
    first, second = spread_scene(np.random.default_rng(0), n)
    tracker = Tracker()
    tracker.update(*first, 0.0)
    tracemalloc.start()
    try:
        ids = tracker.update(*second, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (ids == np.arange(1, n + 1)).all()  # every object kept its id
    assert peak < 32 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_a_crowd_beyond_the_cluster_limit_is_matched_greedily_and_one_to_one():
    """Thousands of boxes piled in one place (a score threshold of 0 on noise) link into
    one cluster: matched greedily, cheapest pair first, in bounded memory."""
    rng = np.random.default_rng(1)
    n = 3000
    xy = rng.uniform(0, 200, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(40, 80, (n, 2))], 1)
    ground = rng.uniform(0, 5, (n, 2))  # every pair within 3 m... of NEAREST candidates
    classes = np.zeros(n, np.int64)
    tracker = Tracker()
    tracker.update(boxes, classes, ground, 0.0)
    moved = boxes + rng.uniform(-2, 2, boxes.shape)
    tracemalloc.start()
    try:
        ids = tracker.update(moved, classes, ground, 0.1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    matched = ids[ids <= n]
    assert len(set(matched.tolist())) == len(matched) > 0.9 * n
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"


def test_greedy_assignment_takes_the_cheapest_pair_first(monkeypatch):
    # Tracks 0, 1 and detections 0, 1: the optimum pairs 0-1 and 1-0 (0.35), greedy
    # takes 0-0 (0.1) first and is left with 1-1 (1.0).
    rows, cols = np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1])
    cost = np.array([0.1, 0.2, 0.15, 1.0])
    optimal = tracking._assign(rows, cols, cost, 2, 2)
    assert sorted(zip(*[x.tolist() for x in optimal])) == [(0, 1), (1, 0)]
    monkeypatch.setattr(tracking, "CLUSTER_LIMIT", 3)
    greedy = tracking._assign(rows, cols, cost, 2, 2)
    assert sorted(zip(*[x.tolist() for x in greedy])) == [(0, 0), (1, 1)]
