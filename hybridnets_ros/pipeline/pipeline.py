"""One frame's path: BGR image -> pre-processing -> backend -> post-processing -> Result.

The pipeline knows nothing about ROS; the node, the CLI and the replay tool each hold one.
Its thresholds are plain attributes: the configuration (pipeline.config) validates them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.anchors import generate_anchors
from ..backends import Backend, RawOutputs
from ..backends.base import ShapeLru
from ..core.postprocess import MAX_DETECTIONS, Detections, as_tensor, class_map, detect
from ..core.preprocess import Letterbox, Preprocessor
from ..core.sources import InputError, degenerate_shape
from ..core.torch_preprocess import TorchPreprocessor
from ..core.spec import BDD100K, ModelSpec


@dataclass
class Result:
    detections: Detections
    seg_mask: np.ndarray          # uint8 [h0, w0]: 0 background, 1 road, 2 lane
    letterbox: Letterbox
    timings_ms: dict[str, float] = field(default_factory=dict)


class Pipeline:
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

    def __call__(self, bgr: np.ndarray) -> Result:
        """Raises InputError (kind "unsupported image size") for a shape the network is not
        run on: every new shape costs an engine, and a sliver carries nothing to detect."""
        if problem := degenerate_shape(bgr.shape[1], bgr.shape[0]):
            raise InputError(f"unsupported image size: {problem}", "unsupported image size")
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
