"""Debug overlay: road and lane tinted, boxes with class and score."""
from __future__ import annotations

import cv2
import numpy as np

from .postprocess import Detections

# BGR tint per segmentation class (0 = background is left untouched).
SEG_PALETTE = np.array([[0, 0, 0], [60, 180, 75], [0, 215, 255]], np.uint8)
BOX_COLOR = (255, 96, 0)


def draw_overlay(bgr: np.ndarray, seg_mask: np.ndarray, detections: Detections,
                 class_names: tuple[str, ...]) -> np.ndarray:
    """A new BGR image: classes blended 50/50 with their colour, then the boxes."""
    tint = cv2.addWeighted(bgr, 0.5, SEG_PALETTE[seg_mask], 0.5, 0.0)
    out = bgr.copy()
    cv2.copyTo(tint, (seg_mask > 0).view(np.uint8), out)
    scale = max(0.4, min(bgr.shape[:2]) / 1000)
    thickness = max(1, round(scale * 2))
    for (x1, y1, x2, y2), score, cls in zip(detections.boxes.astype(int), detections.scores,
                                            detections.classes):
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        name = class_names[cls] if cls < len(class_names) else str(cls)
        cv2.putText(out, f"{name} {score:.2f}", (x1, max(y1 - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale * 0.6, BOX_COLOR, thickness, cv2.LINE_AA)
    return out
