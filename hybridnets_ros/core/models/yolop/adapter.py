"""YOLOP (BDD100K: cars, drivable area, lane lines) as the package sees it: the original's
letterbox, decoded detections through NMS, and two overlapping masks."""
from __future__ import annotations

import numpy as np

from ...adapter import DETECTIONS, LANE, SEMANTIC, DetectionSettings, ModelAdapter, Result
from ...preprocess import Letterbox
from ...surfaces import MaskSurfaces
from . import (CLASS_NAMES, MEAN, OUTPUT_NAMES, RELEASED_WEIGHTS_NAME, STD, Preprocessor,
               build_module, detect, label_confidence, masks_of, probabilities)
from .network import MAX_STRIDE, YOLOP

# segmentation/label values: a lane line on the road is labelled lane. Road is 1, so the
# drivable mask's 0/1 values are already the labels off the lane lines.
SEG_CLASSES = ("background", "road", "lane")
_LANE = np.uint8(SEG_CLASSES.index("lane"))


def yolop_postprocess(outputs, index: int, letterbox: Letterbox, image_hw,
                      settings: DetectionSettings, confidence: bool = False) -> Result:
    frame = slice(index, index + 1)
    detections = detect(outputs[0][frame], letterbox, settings.conf_threshold,
                        settings.iou_threshold, settings.max_detections)
    probs = probabilities(outputs[1][frame], outputs[2][frame], letterbox)
    drivable, lane = (mask.view(bool) for mask in masks_of(probs))
    seg_mask = np.where(lane, _LANE, drivable.view(np.uint8))
    scores = label_confidence(probs, drivable, lane) if confidence else None
    return Result(detections, seg_mask, drivable_mask=drivable, lane_mask=lane,
                  confidence=scores)


class YolopAdapter(ModelAdapter):
    name = "yolop"
    method = "YOLOP (BDD100K)"
    summary = "cars, drivable area, lanes (YOLOP)"
    detection_classes = CLASS_NAMES
    seg_classes = SEG_CLASSES
    seg_colors_rgb = ((0, 0, 0), (75, 180, 60), (255, 215, 0))
    products = frozenset({DETECTIONS, SEMANTIC, LANE})
    drivable_classes = ("road", "lane")
    obstacle_classes = ("background",)
    tint_background = False
    weights_name = RELEASED_WEIGHTS_NAME
    weights_source = "weights/End-to-end.pth of the authors' repository hustvl/YOLOP"
    # The file their hubconf.py loads, committed in the repository (not a release asset).
    weights_url = "https://github.com/hustvl/YOLOP/raw/main/weights/End-to-end.pth"
    checkpoint_label = "YOLOP"
    output_names = OUTPUT_NAMES
    input_multiple = MAX_STRIDE
    uses_input_size = True
    batches_cameras = True

    def build_module(self, **_) -> YOLOP:
        return build_module()

    def onnx_metadata(self) -> dict[str, str]:
        # The input planes are B, G, R: mean[0] and std[0] belong to blue.
        return {**super().onnx_metadata(), "channel_order": "bgr",
                "mean": ",".join(map(str, MEAN)), "std": ",".join(map(str, STD))}

    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     **_) -> Preprocessor:
        return Preprocessor(input_size)

    def postprocessor(self, on_device: bool = False, **_):
        return yolop_postprocess

    def surfaces(self, config) -> MaskSurfaces:
        return MaskSurfaces()
