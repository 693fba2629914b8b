"""Debug overlay: classes tinted, boxes with class and score (and track id, distance)."""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from .postprocess import Detections

BOX_COLOR = (255, 96, 0)


@lru_cache(maxsize=16)
def _channel_luts(colors: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, ...]:
    """Per channel, [256] uint8: class id -> that channel of its colour (ids past the
    palette: black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(colors)] = colors
    return tuple(np.ascontiguousarray(lut[:, c]) for c in range(3))


def colorize(class_map: np.ndarray, colors: tuple[tuple[int, int, int], ...],
             out: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 image of a uint8 class map, ``colors[i]`` for class i, in the channel
    order ``colors`` is written in (into ``out`` when given). One single-channel cv2.LUT
    per channel, then cv2.merge: OpenCV vectorises both, not its 3-channel LUT, and
    numpy's palette indexing is slower still (docs/benchmarks.md)."""
    planes = [cv2.LUT(class_map, lut) for lut in _channel_luts(colors)]
    return cv2.merge(planes, dst=out)


def draw_result(bgr: np.ndarray, result, adapter, track_ids: np.ndarray | None = None,
                ranges: np.ndarray | None = None) -> np.ndarray:
    """The debug overlay of a network's Result (core.adapter) in its style: its classes in
    its colours (class 0 too where ``network.tint_background``), its detections' boxes."""
    colors_bgr = tuple(c[::-1] for c in adapter.seg_colors_rgb)
    return draw_overlay(bgr, result.seg_mask, result.detections, adapter.detection_classes,
                        colors_bgr, adapter.tint_background, track_ids, ranges)


def draw_overlay(bgr: np.ndarray, seg_mask: np.ndarray, detections: Detections,
                 class_names: tuple[str, ...], colors_bgr: tuple[tuple[int, int, int], ...],
                 tint_background: bool = False, track_ids: np.ndarray | None = None,
                 ranges: np.ndarray | None = None) -> np.ndarray:
    """A new BGR image: classes blended 50/50 with their colour (``colors_bgr``: per class;
    class 0 left untouched unless ``tint_background``), then the boxes, labelled
    "#<track id> <class> <score> <range> m" (id and range where given; NaN ranges left out)."""
    tint = cv2.addWeighted(bgr, 0.5, colorize(seg_mask, colors_bgr), 0.5, 0.0)
    if tint_background:
        out = tint
    else:
        out = bgr.copy()
        cv2.copyTo(tint, (seg_mask > 0).view(np.uint8), out)
    scale = max(0.4, min(bgr.shape[:2]) / 1000)
    thickness = max(1, round(scale * 2))
    count = len(detections)
    ids = [None] * count if track_ids is None else track_ids.tolist()
    distances = [np.nan] * count if ranges is None else ranges.tolist()
    for (x1, y1, x2, y2), score, cls, track_id, distance in zip(
            detections.boxes.astype(int), detections.scores, detections.classes, ids, distances):
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        name = class_names[cls] if cls < len(class_names) else str(cls)
        text = f"{name} {score:.2f}" if track_id is None else f"#{track_id} {name} {score:.2f}"
        if np.isfinite(distance):
            text += f" {distance:.1f} m"
        cv2.putText(out, text, (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale * 0.6, BOX_COLOR, thickness, cv2.LINE_AA)
    return out


# BGR per occupancy value of the drivable grid: unseen, drivable, not drivable.
_BEV_UNSEEN, _BEV_FREE, _BEV_BLOCKED, _BEV_LANE = (40, 40, 40), (150, 150, 150), (60, 110, 60), (0, 215, 255)


def bev_image(drivable: np.ndarray, lane: np.ndarray | None, scale: int = 2) -> np.ndarray:
    """Top-down picture of both grids (lane: None for models without lanes): forward is
    up, left is left; lane cells on top."""
    img = np.empty((*drivable.shape, 3), np.uint8)
    img[:] = _BEV_UNSEEN
    img[drivable == 0] = _BEV_FREE
    img[drivable == 100] = _BEV_BLOCKED
    if lane is not None:
        img[lane == 100] = _BEV_LANE
    # grid rows are y (left positive, increasing), columns are x (forward): rotate so that
    # x points up and +y points left.
    img = np.ascontiguousarray(np.flip(img.transpose(1, 0, 2), axis=(0, 1)))
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) if scale != 1 else img


def depth_picture(depth_m: np.ndarray, max_m: float = 80.0) -> np.ndarray:
    """BGR picture of a depth map: inverse depth in the TURBO colours (near red, far blue),
    so that the near range, where a planner acts, gets most of the colours; black where
    the depth is invalid."""
    inverse = np.clip(1.0 / np.maximum(np.nan_to_num(depth_m, nan=np.inf), 1.0 / 255), 0, 1)
    levels = (255 * (inverse - 1.0 / max_m) / (1 - 1.0 / max_m)).clip(0, 255).astype(np.uint8)
    picture = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)
    picture[~(depth_m > 0)] = 0
    return picture
