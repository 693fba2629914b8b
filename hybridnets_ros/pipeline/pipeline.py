"""One frame's path: BGR image -> pre-processing -> backend -> post-processing -> Result.

``run_batch`` takes several frames (one per camera) through one backend call.

The pipeline knows nothing about ROS; the node, the CLI and the replay tool each hold one.
Its thresholds are plain attributes: the configuration (pipeline.config) validates them.
:class:`Pipeline` runs HybridNets (letterbox, detections); :class:`DensePipeline` the
per-pixel families (Hydra, HyCTAS; core.family). Both give a :class:`Result`.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
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


def device_synchronizer(device: str):
    """A function that waits for ``device`` to finish its queued work: stage times are only
    honest on CUDA when the device has finished the stage (a no-op elsewhere)."""
    if device.startswith("cuda"):
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


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
    batch_size: int = 1           # frames that went through the network together


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
        self._batches: dict[tuple[int, int, int], np.ndarray | torch.Tensor] = ShapeLru()
        # The batch size run_batch uses (several cameras: their number). Only batches of 1
        # and of this size run, so a static-shape engine exists for two sizes, not for each.
        self.batch_size = 1
        self._synchronize = device_synchronizer(backend.device)

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

    def run_batch(self, bgrs: Sequence[np.ndarray]) -> list[Result]:
        """Results of several frames, in order. Frames with the same network input size go
        through the backend ``batch_size`` at a time in one call (pre-processed into a batch
        buffer allocated once). Fewer left over: on CUDA they run as a full batch with
        unused slots (about the time of one frame there), on the CPU one at a time (a
        full batch would cost ``batch_size`` frames of compute). A backend that cannot
        batch runs every frame alone."""
        if len(bgrs) < 2 or self.batch_size < 2 or not self.backend.batching:
            return [self(bgr) for bgr in bgrs]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, bgr in enumerate(bgrs):
            groups.setdefault(Letterbox.compute(bgr.shape[:2], self.input_size,
                                                self.spec.max_stride).input_hw, []).append(i)
        results: list[Result | None] = [None] * len(bgrs)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                frames = [bgrs[i] for i in chunk]
                if len(chunk) == self.batch_size or (len(chunk) > 1 and self.processing_on_device):
                    done = self._batch(frames)
                else:
                    done = [self(bgr) for bgr in frames]
                for i, result in zip(chunk, done):
                    results[i] = result
        return results

    def _batch(self, bgrs: Sequence[np.ndarray]) -> list[Result]:
        """Up to ``batch_size`` frames of one network input size through one backend call
        of batch ``batch_size`` (slots beyond the frames keep old data; nobody reads them)."""
        t0 = time.perf_counter()
        letterboxes, batch = [], None
        for i, bgr in enumerate(bgrs):
            tensor, letterbox = self.preprocessor(bgr)
            if batch is None:
                batch = self._batch_buffer(self.batch_size, tensor)
            batch[i] = tensor[0]  # the preprocessor's buffer is reused by the next frame
            letterboxes.append(letterbox)
        self._synchronize()
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        self._synchronize()
        t2 = time.perf_counter()
        results = []
        for i, letterbox in enumerate(letterboxes):
            started = time.perf_counter()
            result = self.postprocess(raw, letterbox, i)
            result.batch_size = len(bgrs)
            # Per frame: its share of pre-processing, the whole network call it waited for.
            result.timings_ms = {"preprocess": (t1 - t0) * 1e3 / len(bgrs),
                                 "network": (t2 - t1) * 1e3,
                                 "postprocess": (time.perf_counter() - started) * 1e3}
            results.append(result)
        return results

    def _batch_buffer(self, size: int, like: np.ndarray | torch.Tensor):
        key = (size, *like.shape[2:])
        if key not in self._batches:
            if isinstance(like, torch.Tensor):
                self._batches[key] = torch.zeros((size, *like.shape[1:]), dtype=like.dtype,
                                                 device=like.device)
            else:
                self._batches[key] = np.zeros((size, *like.shape[1:]), like.dtype)
        return self._batches[key]

    def postprocess(self, raw: RawOutputs, letterbox: Letterbox, index: int = 0) -> Result:
        """The Result of frame ``index`` of the batch ``raw``."""
        regression = as_tensor(raw.regression)[index]
        key = (letterbox.input_hw, regression.device)
        if key not in self._anchors:
            self._anchors[key] = torch.from_numpy(
                generate_anchors(letterbox.input_hw, self.spec).copy()).to(regression.device)
        detections = detect(regression, raw.classification[index], self._anchors[key], letterbox,
                            self.conf_threshold, self.iou_threshold, self.max_detections)
        return Result(detections, class_map(raw.segmentation[index], letterbox,
                                            self.processing_on_device), letterbox)


class DensePipeline:
    """A per-pixel family (core.family.DenseFamily): its pre-processing -> backend -> its
    post-processing, giving class ids (and depth) at the image's size and no detections.

    ``options`` are the family's settings (input_scale for Hydra, hyctas_path for HyCTAS).
    The threshold attributes exist so that run-time configuration applies uniformly; no
    detections means nothing reads them.
    """

    processing_on_device = False
    batch_size = 1  # several cameras' frames run one at a time

    def __init__(self, backend: Backend, family: DenseFamily, **options):
        self.backend = backend
        self.family = family
        self.options = options
        self.conf_threshold = self.iou_threshold = 0.0
        self.max_detections = 0
        self._synchronize = device_synchronizer(backend.device)

    def network_input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw`` (what engines are built for)."""
        tensor, _ = self.family.prepare(np.zeros((*image_hw, 3), np.uint8), **self.options)
        return tuple(tensor.shape[2:])

    def run_batch(self, bgrs: list[np.ndarray]) -> list[Result]:
        return [self(bgr) for bgr in bgrs]

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
