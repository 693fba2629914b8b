"""HyCTAS (Cityscapes, 19 classes) as the package sees it: the reference evaluation's
padded input (or the faster native one) and its class map cropped to the image."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ...adapter import SEMANTIC, BenchPath, ModelAdapter, Result
from ...postprocess import Detections
from ...settings import setting
from . import ARCHITECTURES, CLASS_COLORS_RGB, CLASS_NAMES, MEAN_RGB, STD_RGB, STRIDE, REFERENCE_HW
from . import build_module, labels_and_confidence, preprocess
from .network import HyCTAS

PATHS = ("reference", "native")


@dataclass(frozen=True)
class HyctasSettings:
    """The settings HyCTAS adds to the configuration."""

    hyctas_path: str = setting("reference", "hyctas: reference (pad to 1024x2048, the published "
                               "evaluation, exact) or native (pad to a multiple of 16 only, "
                               "about 2x faster, differs)", choices=PATHS, configure=True,
                               option="--hyctas-path")
    hyctas_arch: str = setting("S", "hyctas: architecture S, M, L or the path of an "
                               "architecture JSON file", configure=True, option="--hyctas-arch",
                               metavar="S|M|L|JSON")


class HyctasPreprocessor:
    def __init__(self, path: str = "reference"):
        self.path = path

    def __call__(self, bgr: np.ndarray):
        return preprocess(bgr, self.path)

    def input_hw(self, image_hw) -> tuple[int, int]:
        if self.path == "reference":
            return REFERENCE_HW
        return tuple(-(-side // STRIDE) * STRIDE for side in image_hw)


def hyctas_postprocess(outputs, index: int, crop, image_hw, _settings,
                       confidence: bool = False) -> Result:
    logits = outputs[0][index:index + 1]
    if isinstance(logits, torch.Tensor):
        logits = logits.cpu()
    train_ids, scores = labels_and_confidence(logits, crop, image_hw, confidence)
    return Result(Detections.empty(), train_ids, confidence=scores)


class HyctasAdapter(ModelAdapter):
    name = "hyctas"
    method = "HyCTAS: real-time semantic segmentation (Cityscapes, 19 classes)"
    summary = "19 Cityscapes classes"
    seg_classes = CLASS_NAMES
    seg_colors_rgb = CLASS_COLORS_RGB
    products = frozenset({SEMANTIC})
    drivable_classes = ("road",)
    obstacle_classes = ("sidewalk", "building", "wall", "fence", "pole", "vegetation", "terrain",
                        "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                        "bicycle")
    no_surface_classes = ("sky",)
    weights_name = "hyctas_s.pth"
    weights_source = "the HyCTAS authors' release (weights/README.md)"
    output_names = ("logits",)
    settings_type = HyctasSettings

    def setting_problems(self, config) -> list[str]:
        arch = config.hyctas_arch
        if arch not in ARCHITECTURES and not Path(arch).is_file():
            return [f"hyctas_arch must be S, M, L or an architecture JSON file, got {arch!r}"]
        return []

    def build_module(self, hyctas_arch: str = "S", **_) -> HyCTAS:
        return build_module(hyctas_arch)

    def onnx_metadata(self) -> dict[str, str]:
        return {**super().onnx_metadata(), "mean_rgb": ",".join(map(str, MEAN_RGB)),
                "std_rgb": ",".join(map(str, STD_RGB))}

    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     hyctas_path: str = "reference", **_) -> HyctasPreprocessor:
        return HyctasPreprocessor(hyctas_path)

    def postprocessor(self, on_device: bool = False, **_):
        return hyctas_postprocess

    def bench_paths(self, config):
        return (BenchPath("", {"hyctas_path": "reference"}),
                BenchPath(" native", {"hyctas_path": "native"}))
