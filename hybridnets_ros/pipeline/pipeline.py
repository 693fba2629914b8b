"""One frame's path: BGR image -> pre-processing -> backend -> post-processing -> Result.

The pipeline knows nothing about ROS; the node, the CLI and the replay tool each hold one.
Its thresholds are plain attributes: the configuration (pipeline.config) validates them.
:class:`Pipeline` runs HybridNets (letterbox, detections); :class:`DensePipeline` the
per-pixel families (Hydra, HyCTAS; core.family). Both give a :class:`Result`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.anchors import generate_anchors
from ..backends import Backend, RawOutputs
from ..backends.base import ShapeLru
from ..core.family import HYBRIDNETS, DenseFamily
from ..core.postprocess import MAX_DETECTIONS, Detections, as_tensor, class_map, detect
from ..core.preprocess import Letterbox, Preprocessor
from ..core.sources import InputError, degenerate_shape
from ..core.torch_preprocess import TorchPreprocessor
from ..core.spec import BDD100K, ModelSpec


def refuse_degenerate(bgr: np.ndarray) -> None:
    """InputError (kind "unsupported image size") for a shape the network is not run on:
    every new shape costs an engine, and a sliver carries nothing to detect."""
    if problem := degenerate_shape(bgr.shape[1], bgr.shape[0]):
        raise InputError(f"unsupported image size: {problem}", "unsupported image size")


@dataclass
class Result:
    detections: Detections        # empty for families without detections
    seg_mask: np.ndarray          # uint8 [h0, w0]: indices into the family's seg_classes
    letterbox: Letterbox | None   # HybridNets' input geometry; None for the other families
    timings_ms: dict[str, float] = field(default_factory=dict)
    depth_m: np.ndarray | None = None  # float32 [h0, w0] metres, for families with depth


class Pipeline:
    family = HYBRIDNETS

    def __init__(self, backend: Backend, input_size: int = 640, conf_threshold: float = 0.25,
                 iou_threshold: float = 0.3, spec: ModelSpec = BDD100K,
                 processing_on_device: bool | None = None, max_detections: int = MAX_DETECTIONS):
        self.backend = backend
        self.spec = spec
        # Default when the backend runs on CUDA: one upload of the raw frame, pre- and
        # post-processing on the device, only results come back.
        self.processing_on_device = (backend.device.startswith("cuda")
                                     if processing_on_device is None else processing_on_device)
        if self.processing_on_device:
            self.preprocessor = TorchPreprocessor(input_size, spec, device=backend.device)
        else:
            self.preprocessor = Preprocessor(input_size, spec)
        self.conf_threshold = float(conf_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self._anchors: dict[tuple, torch.Tensor] = ShapeLru()  # as many as the engines
        # Stage times are only honest on CUDA when the device has finished the stage.
        on_cuda = backend.device.startswith("cuda")
        self._synchronize = (lambda: torch.cuda.synchronize(backend.device)) if on_cuda else (lambda: None)

    @property
    def input_size(self) -> int:
        return self.preprocessor.target_size

    def network_input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw`` (what engines are built for)."""
        return self.preprocessor.letterbox(tuple(image_hw)).input_hw

    def __call__(self, bgr: np.ndarray) -> Result:
        """Raises InputError for an image size the network is not run on."""
        refuse_degenerate(bgr)
        t0 = time.perf_counter()
        tensor, letterbox = self.preprocessor(bgr)
        self._synchronize()
        t1 = time.perf_counter()
        raw = self.backend.infer(tensor)
        self._synchronize()
        t2 = time.perf_counter()
        result = self.postprocess(raw, letterbox)
        t3 = time.perf_counter()
        result.timings_ms = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                             "postprocess": (t3 - t2) * 1e3}
        return result

    def postprocess(self, raw: RawOutputs, letterbox: Letterbox) -> Result:
        regression = as_tensor(raw.regression)[0]
        key = (letterbox.input_hw, regression.device)
        if key not in self._anchors:
            self._anchors[key] = torch.from_numpy(
                generate_anchors(letterbox.input_hw, self.spec).copy()).to(regression.device)
        detections = detect(regression, raw.classification[0], self._anchors[key], letterbox,
                            self.conf_threshold, self.iou_threshold, self.max_detections)
        return Result(detections, class_map(raw.segmentation[0], letterbox, self.processing_on_device),
                      letterbox)


class DensePipeline:
    """A per-pixel family (core.family.DenseFamily): its pre-processing -> backend -> its
    post-processing, giving class ids (and depth) at the image's size and no detections.

    ``options`` are the family's settings (input_scale for Hydra, hyctas_path for HyCTAS).
    The threshold attributes exist so that run-time configuration applies uniformly; no
    detections means nothing reads them.
    """

    processing_on_device = False

    def __init__(self, backend: Backend, family: DenseFamily, **options):
        self.backend = backend
        self.family = family
        self.options = options
        self.conf_threshold = self.iou_threshold = 0.0
        self.max_detections = 0
        on_cuda = backend.device.startswith("cuda")
        self._synchronize = (lambda: torch.cuda.synchronize(backend.device)) if on_cuda else (lambda: None)

    def network_input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw`` (what engines are built for)."""
        tensor, _ = self.family.prepare(np.zeros((*image_hw, 3), np.uint8), **self.options)
        return tuple(tensor.shape[2:])

    def __call__(self, bgr: np.ndarray) -> Result:
        refuse_degenerate(bgr)
        t0 = time.perf_counter()
        tensor, context = self.family.prepare(bgr, **self.options)
        t1 = time.perf_counter()
        outputs = self.backend.infer(tensor)
        self._synchronize()
        t2 = time.perf_counter()
        seg_mask, depth_m = self.family.finish(outputs, context, bgr.shape[:2])
        t3 = time.perf_counter()
        return Result(Detections.empty(), seg_mask, None, depth_m=depth_m,
                      timings_ms={"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                                  "postprocess": (t3 - t2) * 1e3})
