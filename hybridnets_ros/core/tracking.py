"""Multi-object tracking over frames: stable ids and ground-plane velocities for detections.

Each track keeps its last 2D box and ground position with velocities from an alpha-beta
filter (a fixed-gain Kalman filter for constant velocity). Every update predicts each track
to the frame's time, finds the same-class (track, detection) pairs that can match (boxes
that overlap enough, by core.nms.overlapping_pairs; ground positions near enough, by a k-d
tree), scores them by the overlap of the predicted box and, when ground positions are
given, by their ground distance, and finds the cheapest one-to-one assignment among them,
cluster by cluster of tracks and detections linked by such pairs. The state lives in
arrays, one row per track; beyond a frame of traffic (DENSE_PAIRS pairs, which are compared
and assigned all at once) the work grows with the number of tracks and of pairs that can
match, not with their product: 10,000 tracks and detections take tens of milliseconds
(docs/benchmarks.md).

Velocities are in the frame of the ground positions given: relative to the ego vehicle for
base_footprint positions, over ground for positions in a fixed frame such as odom.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .nms import overlapping_pairs, pair_iou

# Candidates a track considers per gate: its NEAREST detections of highest overlap, and
# its NEAREST closest ones on the ground (with min_iou 0, where every same-class pair
# passes the overlap gate, its NEAREST closest box centres). Traffic never has more (32
# objects of one class within max_distance_m of one track, or overlapping one track's
# box): there the assignment is the one over every pair. Noise piled up at a score
# threshold of 0 does, and this bounds the tracker's work and memory.
NEAREST = 32
# Clusters of tracks and detections linked by pairs that can match are assigned
# optimally up to this size (tracks + detections), greedily beyond: the optimal
# assignment's time grows with the cube of a cluster's size (a score threshold of 0 on
# noise links thousands; traffic a few dozen at most).
CLUSTER_LIMIT = 1000
# Cost of a pair the gates reject within a cluster's dense assignment: larger than any
# sum of allowed pairs' costs (each at most 2), so that the assignment matches as many
# pairs as the gates allow and, among those matchings, minimises the cost.
_FORBIDDEN = 1e6
# Clusters of at most this many tracks and detections are assigned by trying every
# permutation, all clusters at once.
_SMALL = 3
_PERMUTATIONS = np.array(list(itertools.permutations(range(_SMALL))))
# Up to this many (track, detection) pairs (a frame of traffic: 150 tracks, 100
# detections), every same-class pair is compared and assigned at once: the assignment over
# every pair, which the candidate search gives where no track has more than NEAREST
# candidates, without that search's fixed cost (~1.5 ms a frame).
DENSE_PAIRS = 16384


def _alpha_beta(position: np.ndarray, velocity: np.ndarray, measured: np.ndarray,
                dt: np.ndarray, position_gain: float, velocity_gain: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """One alpha-beta step for rows [K,D] observed ``dt`` [K] seconds after their last
    observation. NaN marks what is not known yet: a row without a position takes the
    measurement; a row without a velocity takes the difference of its first two positions;
    a NaN measurement or a non-positive dt leaves the row as it was."""
    dt = dt[:, None]
    measured_ok = np.isfinite(measured).all(-1, keepdims=True) & (dt > 0)
    has_position = np.isfinite(position).all(-1, keepdims=True)
    has_velocity = np.isfinite(velocity).all(-1, keepdims=True)
    safe_dt = np.where(dt > 0, dt, 1.0)
    predicted = position + np.where(has_velocity, velocity, 0.0) * dt
    residual = measured - predicted
    filtered_position = np.where(has_velocity, predicted + position_gain * residual, measured)
    filtered_velocity = np.where(has_velocity, velocity + velocity_gain * residual / safe_dt,
                                 (measured - position) / safe_dt)
    first_position = measured_ok & ~has_position
    update = measured_ok & has_position
    new_position = np.where(update, filtered_position, np.where(first_position, measured, position))
    new_velocity = np.where(update, filtered_velocity, velocity)
    return new_position, new_velocity


@dataclass(frozen=True)
class TrackerSettings:
    """The settings of :class:`Tracker`, replaced as a whole (from any thread) and read
    once per update."""

    max_missed: int = 5
    min_iou: float = 0.1
    max_distance_m: float = 3.0

    def __post_init__(self):
        if self.max_missed < 0 or not 0.0 <= self.min_iou <= 1.0 or self.max_distance_m <= 0:
            raise ValueError(f"invalid tracker settings: max_missed={self.max_missed}, "
                             f"min_iou={self.min_iou}, max_distance_m={self.max_distance_m}")


class Tracker:
    """Gives each detection an id that stays the same for the same object across frames.

    ``update`` matches detections to tracks of the same class. A pair may match when the
    track's box, moved on at its velocity to the frame's time, overlaps the detection by
    IoU >= ``min_iou``, or when both have ground positions no farther apart than
    ``max_distance_m`` (the track's predicted the same way). Overlap serves far objects,
    whose ground positions are noisy; ground distance serves near, fast ones, whose boxes
    move a lot between frames. Among allowed pairs the assignment matches as many as it
    can and among those minimises the sum of ``(1 - IoU) + min(distance / max_distance_m,
    1)`` (1 for the distance term where a ground position is missing). In a crowd no
    traffic makes (more than NEAREST candidates for a track through one gate) a track
    considers its NEAREST best by each gate, and a cluster of more than CLUSTER_LIMIT
    linked tracks and detections is matched greedily, cheapest pair first: bounded work
    for noise. Unmatched detections start tracks with new ids (from 1,
    never reused); a track not matched for more than ``max_missed`` consecutive updates
    ends. Positions and velocities are smoothed by an alpha-beta filter with gains
    ``position_gain`` and ``velocity_gain`` (default: the Benedict-Bordner pair,
    beta = alpha^2 / (2 - alpha), a good trade of noise against lag).
    """

    def __init__(self, max_missed: int = 5, min_iou: float = 0.1, max_distance_m: float = 3.0,
                 position_gain: float = 0.5, velocity_gain: float | None = None):
        if not 0.0 < position_gain <= 1.0:
            raise ValueError(f"position_gain must be in (0, 1], got {position_gain}")
        self.settings = TrackerSettings(int(max_missed), float(min_iou), float(max_distance_m))
        self.position_gain = float(position_gain)
        self.velocity_gain = (position_gain ** 2 / (2.0 - position_gain) if velocity_gain is None
                              else float(velocity_gain))
        self._next_id = 1
        self._last_stamp: float | None = None
        self._ids = np.zeros(0, np.int64)
        self._classes = np.zeros(0, np.int64)
        self._boxes = np.zeros((0, 4))
        self._box_velocities = np.zeros((0, 4))
        self._box_stamps = np.zeros(0)
        self._ground = np.zeros((0, 2))
        self._ground_velocities = np.zeros((0, 2))
        self._ground_stamps = np.zeros(0)
        self._missed = np.zeros(0, np.int64)
        self._velocities = np.zeros((0, 2))
        self._ended = np.zeros(0, np.int64)

    @property
    def track_ids(self) -> np.ndarray:
        """Ids of the live tracks (matched or still waiting out ``max_missed``)."""
        return self._ids.copy()

    @property
    def velocities(self) -> np.ndarray:
        """[N,2] ground-plane velocity (m/s) of the last update's detections, aligned with the
        ids it returned; NaN until a track has two ground positions."""
        return self._velocities.copy()

    def ended_ids(self) -> np.ndarray:
        """Ids of the tracks that ended in the last update."""
        return self._ended.copy()

    def reset(self) -> None:
        """End every track (``ended_ids`` lists them until the next update); new ids keep
        counting on, so none is reused."""
        self._ended = self._ids.copy()
        self._keep(np.zeros(len(self._ids), bool))
        self._last_stamp = None

    def update(self, boxes_xyxy: np.ndarray, class_ids: np.ndarray, ground_xy: np.ndarray | None,
               stamp_s: float) -> np.ndarray:
        """Track ids [N] int64 for this frame's detections: ``boxes_xyxy`` [N,4] pixels,
        ``class_ids`` [N], ``ground_xy`` [N,2] (or [N,3]; NaN rows for detections without
        one) or None, ``stamp_s`` the frame's time in seconds."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        classes = np.asarray(class_ids, np.int64).reshape(-1)
        count = len(boxes)
        if len(classes) != count:
            raise ValueError(f"{count} boxes but {len(classes)} class ids")
        if ground_xy is None:
            ground = np.full((count, 2), np.nan)
        else:
            ground = np.asarray(ground_xy, np.float64)[..., :2].reshape(count, 2)
        stamp = float(stamp_s)
        settings = self.settings  # one read: a concurrent change applies from the next update
        ended = []
        if self._last_stamp is not None and stamp < self._last_stamp:
            # Time went backwards (a replay looped): the old tracks cannot be predicted.
            ended.append(self._ids)
            self._keep(np.zeros(len(self._ids), bool))
        self._last_stamp = stamp

        track_rows, detection_cols = self._associate(boxes, classes, ground, stamp,
                                                     settings)
        self._correct(track_rows, boxes[detection_cols], ground[detection_cols], stamp)

        ids = np.zeros(count, np.int64)
        velocities = np.full((count, 2), np.nan)
        ids[detection_cols] = self._ids[track_rows]
        velocities[detection_cols] = self._ground_velocities[track_rows]

        matched = np.zeros(len(self._ids), bool)
        matched[track_rows] = True
        self._missed = np.where(matched, 0, self._missed + 1)
        alive = self._missed <= settings.max_missed
        ended.append(self._ids[~alive])
        self._keep(alive)

        new = np.ones(count, bool)
        new[detection_cols] = False
        ids[new] = self._start(boxes[new], classes[new], ground[new], stamp)
        self._velocities = velocities
        self._ended = np.concatenate(ended)
        return ids

    def _associate(self, boxes, classes, ground, stamp,
                   settings: TrackerSettings) -> tuple[np.ndarray, np.ndarray]:
        """Matched (track row, detection index) pairs."""
        if len(self._ids) == 0 or len(boxes) == 0:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        box_dt = (stamp - self._box_stamps)[:, None]
        predicted_boxes = self._boxes + np.nan_to_num(self._box_velocities) * box_dt
        ground_dt = (stamp - self._ground_stamps)[:, None]
        predicted_ground = self._ground + np.nan_to_num(self._ground_velocities) * ground_dt

        dense = len(self._ids) * len(boxes) <= DENSE_PAIRS
        if dense:
            rows, cols = np.nonzero(self._classes[:, None] == classes[None, :])
        else:
            rows, cols = self._candidates(predicted_boxes, boxes, classes, predicted_ground,
                                          ground, settings)
        # The gates and the cost on the candidates, each value as over every pair.
        iou = np.nan_to_num(pair_iou(predicted_boxes, boxes, rows, cols))  # degenerate: 0
        distance = np.hypot(predicted_ground[rows, 0] - ground[cols, 0],
                            predicted_ground[rows, 1] - ground[cols, 1])
        known = np.isfinite(distance)
        near = known & (distance <= settings.max_distance_m)
        allowed = (iou >= settings.min_iou) | near
        rows, cols = rows[allowed], cols[allowed]
        distance_cost = np.where(known[allowed],
                                 np.minimum(distance[allowed] / settings.max_distance_m, 1.0),
                                 1.0)
        cost = (1.0 - iou[allowed]) + distance_cost
        if dense:
            block = np.full((len(self._ids), len(boxes)), _FORBIDDEN)
            block[rows, cols] = cost
            rows, cols = linear_sum_assignment(block)
            matched = block[rows, cols] < _FORBIDDEN
            return rows[matched], cols[matched]
        return _assign(rows, cols, cost, len(self._ids), len(boxes))

    def _candidates(self, predicted_boxes, boxes, classes, predicted_ground, ground,
                    settings: TrackerSettings) -> tuple[np.ndarray, np.ndarray]:
        """(track row, detection index) of each same-class pair that may pass the gates,
        each pair once: those overlapping by IoU >= min_iou (min_iou 0: the NEAREST
        detections by box centre) and the NEAREST within max_distance_m on the ground."""
        if settings.min_iou > 0:
            rows, cols, _ = overlapping_pairs(predicted_boxes, boxes, settings.min_iou,
                                              strict=False, classes_a=self._classes,
                                              classes_b=classes, most=NEAREST)
        else:
            rows, cols = _nearest(
                self._classes, (predicted_boxes[:, :2] + predicted_boxes[:, 2:]) / 2,
                classes, (boxes[:, :2] + boxes[:, 2:]) / 2, np.inf)
        near_rows, near_cols = _nearest(self._classes, predicted_ground, classes, ground,
                                        settings.max_distance_m)
        # Pairs both gates found are kept once (the assignment sums duplicates).
        count = len(boxes)
        found = np.isin(near_rows * count + near_cols, rows * count + cols, kind="sort")
        return (np.concatenate([rows, near_rows[~found]]),
                np.concatenate([cols, near_cols[~found]]))

    def _correct(self, rows, boxes, ground, stamp) -> None:
        """Fold the matched detections into their tracks' filters."""
        self._boxes[rows], self._box_velocities[rows] = _alpha_beta(
            self._boxes[rows], self._box_velocities[rows], boxes, stamp - self._box_stamps[rows],
            self.position_gain, self.velocity_gain)
        self._box_stamps[rows] = stamp
        self._ground[rows], self._ground_velocities[rows] = _alpha_beta(
            self._ground[rows], self._ground_velocities[rows], ground,
            stamp - self._ground_stamps[rows], self.position_gain, self.velocity_gain)
        self._ground_stamps[rows] = np.where(np.isfinite(ground).all(-1), stamp,
                                             self._ground_stamps[rows])

    def _start(self, boxes, classes, ground, stamp) -> np.ndarray:
        """New tracks for unmatched detections; returns their ids."""
        count = len(boxes)
        ids = np.arange(self._next_id, self._next_id + count, dtype=np.int64)
        self._next_id += count
        self._ids = np.concatenate([self._ids, ids])
        self._classes = np.concatenate([self._classes, classes])
        self._boxes = np.concatenate([self._boxes, boxes])
        self._box_velocities = np.concatenate([self._box_velocities, np.full((count, 4), np.nan)])
        self._box_stamps = np.concatenate([self._box_stamps, np.full(count, stamp)])
        self._ground = np.concatenate([self._ground, ground])
        self._ground_velocities = np.concatenate([self._ground_velocities, np.full((count, 2), np.nan)])
        self._ground_stamps = np.concatenate([self._ground_stamps, np.full(count, stamp)])
        self._missed = np.concatenate([self._missed, np.zeros(count, np.int64)])
        return ids

    def _keep(self, rows: np.ndarray) -> None:
        for name in ("_ids", "_classes", "_boxes", "_box_velocities", "_box_stamps", "_ground",
                     "_ground_velocities", "_ground_stamps", "_missed"):
            setattr(self, name, getattr(self, name)[rows])


def _nearest(classes_a: np.ndarray, points_a: np.ndarray, classes_b: np.ndarray,
             points_b: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) pairs of each finite point ``points_a[i]`` with the NEAREST finite points
    ``points_b[j]`` of its class within ``radius`` (a little beyond: the caller applies
    the exact gate)."""
    rows_a = np.flatnonzero(np.isfinite(points_a).all(-1))
    rows_b = np.flatnonzero(np.isfinite(points_b).all(-1))
    if len(rows_a) == 0 or len(rows_b) == 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    # The class as a third coordinate, far beyond any distance asked for: one tree, and a
    # query never crosses classes.
    values = np.unique(np.concatenate([classes_a[rows_a], classes_b[rows_b]]))
    spacing = 4 * (np.abs(points_a[rows_a]).max() + np.abs(points_b[rows_b]).max()) + 1.0
    if np.isfinite(radius):
        spacing = max(spacing, 4 * radius)

    def lifted(points, classes, rows):
        return np.column_stack([points[rows], np.searchsorted(values, classes[rows]) * spacing])
    tree = cKDTree(lifted(points_b, classes_b, rows_b))
    bound = min(radius * (1 + 1e-6) + 1e-9, spacing / 2)
    _, found = tree.query(lifted(points_a, classes_a, rows_a), k=np.arange(1, NEAREST + 1),
                          distance_upper_bound=bound)
    hit = found < len(rows_b)
    return rows_a[np.nonzero(hit)[0]], rows_b[found[hit]]


def _assign(rows: np.ndarray, cols: np.ndarray, cost: np.ndarray, tracks: int,
            detections: int) -> tuple[np.ndarray, np.ndarray]:
    """(track rows, detection cols) matched: within each cluster of tracks and detections
    linked by allowed pairs, the cheapest assignment among those with the most matches
    (what one dense linear_sum_assignment with a forbidding cost elsewhere gives); a cluster
    of more than CLUSTER_LIMIT tracks and detections greedily, cheapest pair first."""
    if len(rows) == 0:
        return rows, cols
    links = scipy.sparse.csr_array((np.ones(len(rows), np.int8), (rows, tracks + cols)),
                                   shape=(tracks + detections,) * 2)
    clusters, cluster = connected_components(links, directed=False)
    cluster = cluster[rows]
    members_tracks = np.bincount(cluster[np.unique(rows, return_index=True)[1]],
                                 minlength=clusters)
    members_detections = np.bincount(cluster[np.unique(cols, return_index=True)[1]],
                                      minlength=clusters)
    size = (members_tracks + members_detections)[cluster]
    # One track or one detection (most clusters: a pair, or a star): its cheapest pair.
    star = (members_tracks == 1)[cluster] | (members_detections == 1)[cluster]
    order = np.lexsort((cols, rows, cost, cluster))
    order = order[star[order]]
    first = order[np.unique(cluster[order], return_index=True)[1]]
    matched = [(rows[first], cols[first])]
    large = ~star & (size > CLUSTER_LIMIT)
    matched.append(_greedy(rows[large], cols[large], cost[large], tracks, detections))
    small = ~star & ~large & ((members_tracks <= _SMALL) & (members_detections <= _SMALL))[cluster]
    matched.append(_small(rows[small], cols[small], cost[small], cluster[small]))
    # The rest, one dense assignment each, as over every pair.
    rest = np.flatnonzero(~star & ~large & ~small)
    rest = rest[np.argsort(cluster[rest], kind="stable")]
    for edges in np.split(rest, np.flatnonzero(np.diff(cluster[rest])) + 1):
        if len(edges) == 0:
            continue
        track_rows, local_rows = np.unique(rows[edges], return_inverse=True)
        detection_cols, local_cols = np.unique(cols[edges], return_inverse=True)
        block = np.full((len(track_rows), len(detection_cols)), _FORBIDDEN)
        block[local_rows, local_cols] = cost[edges]
        r, c = linear_sum_assignment(block)
        allowed = block[r, c] < _FORBIDDEN
        matched.append((track_rows[r[allowed]], detection_cols[c[allowed]]))
    return tuple(np.concatenate(part) for part in zip(*matched))


def _small(rows, cols, cost, cluster) -> tuple[np.ndarray, np.ndarray]:
    """The optimal assignment of clusters of at most _SMALL tracks and detections, all at
    once: each cluster's costs in a _SMALL x _SMALL block (forbidden where no pair is),
    every permutation's sum, the least (a Python loop per cluster costs more than this
    for the few pairs of near misses a frame has)."""
    names, cluster = np.unique(cluster, return_inverse=True)

    def local(members):  # each member's place 0, 1, ... in its cluster, and who is there
        keys, inverse = np.unique(cluster * (members.max() + 1) + members, return_inverse=True)
        owner = keys // (members.max() + 1)
        place = np.arange(len(keys)) - np.searchsorted(owner, owner)
        who = np.zeros((len(names), _SMALL), np.intp)
        who[owner, place] = keys % (members.max() + 1)
        return place[inverse], who
    if len(rows) == 0:
        return rows, cols
    row_place, row_of = local(rows)
    col_place, col_of = local(cols)
    block = np.full((len(names), _SMALL, _SMALL), _FORBIDDEN)
    block[cluster, row_place, col_place] = cost
    totals = block[:, np.arange(_SMALL), _PERMUTATIONS].sum(-1)  # [clusters, permutations]
    chosen = _PERMUTATIONS[np.argmin(totals, axis=1)]           # [clusters, _SMALL]
    which, place = np.nonzero(np.take_along_axis(block, chosen[:, :, None], 2)[:, :, 0]
                              < _FORBIDDEN)
    return row_of[which, place], col_of[which, chosen[which, place]]


def _greedy(rows, cols, cost, tracks: int, detections: int) -> tuple[np.ndarray, np.ndarray]:
    """Cheapest pair first (ties: lower row, then lower column), as rounds that each match
    every pair that is both its track's and its detection's cheapest one left (the same
    matching as taking the pairs one by one in that order)."""
    order = np.lexsort((cols, rows, cost))
    rows, cols = rows[order], cols[order]
    matched_rows, matched_cols = [rows[:0]], [cols[:0]]
    track_free, detection_free = np.ones(tracks, bool), np.ones(detections, bool)
    while len(rows):
        position = np.arange(len(rows))
        first_of_row = np.full(tracks, len(rows))
        np.minimum.at(first_of_row, rows, position)
        first_of_col = np.full(detections, len(rows))
        np.minimum.at(first_of_col, cols, position)
        best = (first_of_row[rows] == position) & (first_of_col[cols] == position)
        matched_rows.append(rows[best])
        matched_cols.append(cols[best])
        track_free[rows[best]] = False
        detection_free[cols[best]] = False
        left = track_free[rows] & detection_free[cols]
        rows, cols = rows[left], cols[left]
    return np.concatenate(matched_rows), np.concatenate(matched_cols)
