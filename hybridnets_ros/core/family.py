"""The model family: each network this package runs, and what it produces.

A family declares its outputs (detections with their class names, semantic classes with
names and colours, metric depth, a lane class), the classes a planner's grid treats as
drivable or as obstacles by default, its released checkpoint, how to build the network and
how to pre- and post-process one image. The node, the commands, replay and bench publish
what the chosen family has; nothing else branches on the network.

HybridNets keeps its own letterbox pipeline (pipeline.Pipeline); the dense families (one
class per pixel, optionally depth) share :class:`DenseFamily`'s ``prepare``/``finish``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from .models import hyctas, hydra
from .spec import BDD100K

DETECTIONS, SEMANTIC, DEPTH, LANE = "detections", "semantic", "depth", "lane"


@dataclass(frozen=True)
class ModelFamily:
    name: str
    method: str                                 # VisionInfo.method: the network and its data
    detection_classes: tuple[str, ...]          # empty: no detections
    seg_classes: tuple[str, ...]                # segmentation/label values 0, 1, ...
    seg_colors_rgb: tuple[tuple[int, int, int], ...]
    has_depth: bool
    has_lane: bool
    drivable_classes: tuple[str, ...]           # default of the drivable_classes setting
    obstacle_classes: tuple[str, ...]           # default of the obstacle_classes setting
    weights_name: str                           # the released checkpoint's file name
    weights_source: str                         # where it comes from (for error messages)
    output_names: tuple[str, ...]               # network outputs, in forward()'s order
    no_surface_classes: tuple[str, ...] = ()    # their depth is no surface (sky): ignored

    @property
    def products(self) -> frozenset[str]:
        """What the network gives: a subset of {detections, semantic, depth, lane}."""
        return frozenset(name for name, has in ((DETECTIONS, bool(self.detection_classes)),
                                                (SEMANTIC, True), (DEPTH, self.has_depth),
                                                (LANE, self.has_lane)) if has)

    def class_ids(self, names) -> np.ndarray:
        """Indices of class ``names`` in seg_classes (ValueError naming an unknown one)."""
        unknown = [n for n in names if n not in self.seg_classes]
        if unknown:
            raise ValueError(f"{self.name} has no class {', '.join(map(repr, unknown))}; its "
                             f"classes: {', '.join(self.seg_classes)}")
        return np.array([self.seg_classes.index(n) for n in names], np.int64)


@dataclass(frozen=True)
class DenseFamily(ModelFamily):
    """A family predicting a class (and maybe a depth) per pixel, without detections."""

    build_network: Callable[..., torch.nn.Module] = None   # (options) -> random network
    load: Callable[[torch.nn.Module, Path], torch.nn.Module] = None
    prepare: Callable[..., tuple[np.ndarray, Any]] = None  # (bgr, options) -> (input, context)
    finish: Callable[..., tuple[np.ndarray, np.ndarray | None]] = None
    # finish(outputs, context, image_hw) -> (seg_mask uint8, depth_m float32 or None)


def _hydra_prepare(bgr: np.ndarray, input_scale: float = 1.0, **_) -> tuple[np.ndarray, None]:
    """The original's input; with input_scale < 1 of an area-downscaled image (the outputs
    are still resized to the full image by ``finish``)."""
    if input_scale != 1.0:
        height, width = bgr.shape[:2]
        size = (max(1, round(width * input_scale)), max(1, round(height * input_scale)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    return hydra.preprocess(bgr), None


def _hydra_finish(outputs, _context, image_hw) -> tuple[np.ndarray, np.ndarray]:
    return hydra.postprocess(outputs[0], outputs[1], image_hw)


def _hyctas_prepare(bgr: np.ndarray, hyctas_path: str = "reference", **_):
    return hyctas.preprocess(bgr, hyctas_path)


def _hyctas_finish(outputs, crop, image_hw) -> tuple[np.ndarray, None]:
    logits = outputs[0]
    if isinstance(logits, torch.Tensor):
        logits = logits.cpu()
    return hyctas.postprocess(logits, crop, image_hw), None


def _hyctas_build(hyctas_arch: str = "S", **_) -> torch.nn.Module:
    return hyctas.build_network(hyctas_arch)


HYBRIDNETS = ModelFamily(
    name="hybridnets", method="HybridNets (BDD100K)", detection_classes=BDD100K.class_names,
    seg_classes=BDD100K.seg_class_names,
    # The overlay's tints (background untouched), as RGB.
    seg_colors_rgb=((0, 0, 0), (75, 180, 60), (255, 215, 0)),
    has_depth=False, has_lane=True, drivable_classes=("road", "lane"),
    obstacle_classes=("background",), weights_name="hybridnets.pth",
    weights_source="`hybridnets download-weights` (the original project's GitHub release v1.0)",
    output_names=("regression", "classification", "segmentation"))

HYDRA = DenseFamily(
    name="hydra", method="Hydra: MobileNetV2 + Light-Weight RefineNet, joint segmentation and "
                         "metric depth (KITTI, 6 classes)",
    detection_classes=(), seg_classes=hydra.CLASS_NAMES, seg_colors_rgb=hydra.CLASS_COLORS_RGB,
    has_depth=True, has_lane=False, drivable_classes=("road",),
    obstacle_classes=("building", "sidewalk", "vegetation", "car"),
    weights_name=hydra.RELEASED_WEIGHTS_NAME,
    weights_source="the authors' release of DrSleep/multi-task-refinenet (weights/README.md; "
                   "it cannot be downloaded by this package)",
    output_names=hydra.OUTPUT_NAMES, no_surface_classes=("sky",),
    build_network=lambda **_: hydra.build_network(), load=hydra.load_checkpoint,
    prepare=_hydra_prepare, finish=_hydra_finish)

HYCTAS = DenseFamily(
    name="hyctas", method="HyCTAS: real-time semantic segmentation (Cityscapes, 19 classes)",
    detection_classes=(), seg_classes=hyctas.CLASS_NAMES, seg_colors_rgb=hyctas.CLASS_COLORS_RGB,
    has_depth=False, has_lane=False, drivable_classes=("road",),
    obstacle_classes=("sidewalk", "building", "wall", "fence", "pole", "vegetation", "terrain",
                      "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle"),
    weights_name="hyctas_s.pth",
    weights_source="the HyCTAS authors' release (weights/README.md; it cannot be downloaded "
                   "by this package)",
    output_names=("logits",), no_surface_classes=("sky",),
    build_network=_hyctas_build, load=hyctas.load_checkpoint,
    prepare=_hyctas_prepare, finish=_hyctas_finish)

FAMILIES: dict[str, ModelFamily] = {f.name: f for f in (HYBRIDNETS, HYDRA, HYCTAS)}


def family(name: str) -> ModelFamily:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(FAMILIES)}") from None


def build_network(model_family: ModelFamily, weights: str | Path | None,
                  **options) -> torch.nn.Module:
    """The family's network in eval mode with the checkpoint ``weights`` (strict load), or
    random weights when None. ``options``: the family's build settings (hyctas_arch).
    Raises WeightsError naming what is wrong with the file."""
    from .weights import WeightsError, build_model

    if not isinstance(model_family, DenseFamily):
        return build_model(weights, random_weights=weights is None)
    with torch.random.fork_rng():  # random weights are the same in every process
        torch.manual_seed(0)
        model = model_family.build_network(**options)
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise WeightsError(f"{model_family.name} weights file not found: {path}")
        try:
            model_family.load(model, path)
        except ValueError as exc:
            raise WeightsError(str(exc)) from None
    return model.eval().requires_grad_(False)
