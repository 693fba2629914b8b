"""Hydra (KITTI, 6 classes + metric depth) as the package sees it: the original's input,
optionally of an area-downscaled image, and its outputs resized to the image."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...adapter import DEPTH, SEMANTIC, BenchPath, ModelAdapter, Result
from ...postprocess import Detections
from ...settings import setting
from . import CLASS_COLORS_RGB, CLASS_NAMES, OUTPUT_NAMES, RELEASED_WEIGHTS_NAME, MEAN_RGB, STD_RGB
from . import build_module, postprocess, preprocess
from .network import HydraNet


@dataclass(frozen=True)
class HydraSettings:
    """The setting Hydra adds to the configuration."""

    input_scale: float = setting(1.0, "hydra: run the network on the image scaled by this "
                                 "(outputs still at full size); 1.0 is the exact original, 0.5 "
                                 "about 4x faster", range_=(0.1, 1.0), configure=True,
                                 option="--input-scale", metavar="S")


class HydraPreprocessor:
    def __init__(self, input_scale: float = 1.0):
        self.input_scale = input_scale
        self._buffer = np.empty(0, np.float32)  # reused: overwritten by the next frame

    def _scaled_hw(self, image_hw) -> tuple[int, int]:
        height, width = image_hw
        return max(1, round(height * self.input_scale)), max(1, round(width * self.input_scale))

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, None]:
        if self.input_scale != 1.0:
            height, width = self._scaled_hw(bgr.shape[:2])
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
        self._buffer = preprocess(bgr, self._buffer)
        return self._buffer, None

    def input_hw(self, image_hw) -> tuple[int, int]:
        return self._scaled_hw(image_hw) if self.input_scale != 1.0 else tuple(image_hw)


def hydra_postprocess(outputs, index: int, _context, image_hw, _settings,
                      confidence: bool = False) -> Result:
    seg_mask, depth_m, *scores = postprocess(outputs[0][index:index + 1],
                                             outputs[1][index:index + 1], image_hw, confidence)
    return Result(Detections.empty(), seg_mask, depth_m=depth_m,
                  confidence=scores[0] if scores else None)


class HydraAdapter(ModelAdapter):
    name = "hydra"
    method = ("Hydra: MobileNetV2 + Light-Weight RefineNet, joint segmentation and metric "
              "depth (KITTI, 6 classes)")
    summary = "6 KITTI classes + metric depth"
    seg_classes = CLASS_NAMES
    seg_colors_rgb = CLASS_COLORS_RGB
    products = frozenset({SEMANTIC, DEPTH})
    drivable_classes = ("road",)
    obstacle_classes = ("building", "sidewalk", "vegetation", "car")
    no_surface_classes = ("sky",)
    weights_name = RELEASED_WEIGHTS_NAME
    weights_source = ("weights/ExpKITTI_joint.ckpt of the authors' repository "
                      "DrSleep/multi-task-refinenet")
    # The file their ExpKITTI_joint notebook loads, committed in the repository.
    weights_url = ("https://github.com/DrSleep/multi-task-refinenet/raw/master/weights/"
                   "ExpKITTI_joint.ckpt")
    output_names = OUTPUT_NAMES
    onnx_revision = 2  # 2: an identity pool before each chained residual pooling
    settings_type = HydraSettings

    def build_module(self, **_) -> HydraNet:
        return build_module()

    def onnx_metadata(self) -> dict[str, str]:
        return {**super().onnx_metadata(), "mean_rgb": ",".join(map(str, MEAN_RGB)),
                "std_rgb": ",".join(map(str, STD_RGB))}

    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     input_scale: float = 1.0, **_) -> HydraPreprocessor:
        return HydraPreprocessor(input_scale)

    def postprocessor(self, on_device: bool = False, **_):
        return hydra_postprocess

    def bench_paths(self, config):
        scale = config.input_scale if config.input_scale != 1.0 else 0.5
        return (BenchPath("", {"input_scale": 1.0}),
                BenchPath(f" scale {scale:g}", {"input_scale": scale}))

