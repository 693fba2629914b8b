"""One frame's path: BGR image -> pre-processing -> backend -> post-processing -> Result.

One :class:`Pipeline` for every network: the backend's model adapter (core.adapter) gives
the pre- and post-processing; the pipeline times the stages and batches frames.
``run_batch`` takes several frames (one per camera) through one backend call.

The pipeline knows nothing about ROS; the node, the CLI and the replay tool each hold one.
The detection thresholds come with each call (``settings``), or are the ones it was
built with; the configuration (pipeline.config) validates them.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ..backends import Backend
from ..core.adapter import DetectionSettings, ModelAdapter, Result
from ..core.lru import ShapeLru
from ..core.sources import InputError, degenerate_shape

__all__ = ["Pipeline", "Result", "device_synchronizer", "refuse_degenerate"]


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


class Pipeline:
    def __init__(self, backend: Backend, input_size: int = 640,
                 settings: DetectionSettings = DetectionSettings(),
                 processing_on_device: bool | None = None, options: dict | None = None):
        """``settings``: the detection thresholds, the one copy the node changes at run
        time; ``options``: the settings the network adds (ModelAdapter.settings)."""
        self.backend = backend
        self.adapter: ModelAdapter = backend.adapter
        self.options = dict(options or {})
        # Default when the backend runs on CUDA and the network can: one upload of the raw
        # frame, pre- and post-processing on the device, only results come back.
        on_device = (backend.device.startswith("cuda") if processing_on_device is None
                     else processing_on_device)
        self.processing_on_device = on_device and self.adapter.processing_on_device
        self.input_size = input_size
        self.preprocessor = self.adapter.preprocessor(input_size, backend.device,
                                                    self.processing_on_device, **self.options)
        self._postprocess = self.adapter.postprocessor(self.processing_on_device, **self.options)
        self.settings = settings
        self._batches: dict[tuple[int, int, int], np.ndarray | torch.Tensor] = ShapeLru()
        # The batch size run_batch uses (several cameras: their number). Only batches of 1
        # and of this size run, so a static-shape engine exists for two sizes, not for each.
        self.batch_size = 1
        self._synchronize = device_synchronizer(backend.device)

    def network_input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw`` (what engines are built for)."""
        return tuple(self.preprocessor.input_hw(tuple(image_hw)))

    def __call__(self, bgr: np.ndarray, settings: DetectionSettings | None = None,
                 confidence: bool = False) -> Result:
        """Raises InputError for an image size the network is not run on. ``confidence``:
        fill Result.confidence (costs post-processing time: only for subscribers)."""
        refuse_degenerate(bgr)
        t0 = time.perf_counter()
        tensor, context = self.preprocessor(bgr)
        self._synchronize()
        t1 = time.perf_counter()
        raw = self.backend.infer(tensor)
        self._synchronize()
        t2 = time.perf_counter()
        result = self.postprocess(raw, context, 0, bgr.shape[:2], settings, confidence)
        t3 = time.perf_counter()
        result.timings_ms = {"preprocess": (t1 - t0) * 1e3, "network": (t2 - t1) * 1e3,
                             "postprocess": (t3 - t2) * 1e3}
        return result

    def run_batch(self, bgrs: Sequence[np.ndarray], settings: DetectionSettings | None = None,
                  confidence: bool = False) -> list[Result]:
        """Results of several frames, in order. Frames with the same network input size go
        through the backend ``batch_size`` at a time in one call (pre-processed into a batch
        buffer allocated once). Fewer left over: on CUDA they run as a full batch with
        unused slots (about the time of one frame there), on the CPU one at a time (a
        full batch would cost ``batch_size`` frames of compute). A backend that cannot
        batch runs every frame alone."""
        results: list[Result | None] = [None] * len(bgrs)
        for chunk, batch in self._plan([bgr.shape[:2] for bgr in bgrs]):
            frames = [bgrs[i] for i in chunk]
            done = (self._batch(frames, settings, confidence) if batch > 1
                    else [self(frames[0], settings, confidence)])
            for i, result in zip(chunk, done):
                results[i] = result
        return results

    def engine_shapes(self, image_hws: Sequence[tuple[int, int]]) -> list[tuple[int, int, int]]:
        """The (batch, H, W) engine that each of these frames runs on in ``run_batch``."""
        shapes: list = [None] * len(image_hws)
        for chunk, batch in self._plan(image_hws):
            for i in chunk:
                shapes[i] = (batch, *self.network_input_hw(image_hws[i]))
        return shapes

    def _plan(self, image_hws: Sequence[tuple[int, int]]) -> list[tuple[list[int], int]]:
        """How ``run_batch`` runs frames of these sizes: (frame indices, batch size) per
        backend call (see there)."""
        if len(image_hws) < 2 or self.batch_size < 2 or not self.backend.batching:
            return [([i], 1) for i in range(len(image_hws))]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, hw in enumerate(image_hws):
            groups.setdefault(self.network_input_hw(hw), []).append(i)
        plan = []
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                if len(chunk) == self.batch_size or (len(chunk) > 1 and self.processing_on_device):
                    plan.append((chunk, self.batch_size))
                else:
                    plan += [([i], 1) for i in chunk]
        return plan

    def _batch(self, bgrs: Sequence[np.ndarray], settings: DetectionSettings | None,
               confidence: bool = False) -> list[Result]:
        """Up to ``batch_size`` frames of one network input size through one backend call
        of batch ``batch_size`` (slots beyond the frames keep old data; nobody reads them)."""
        t0 = time.perf_counter()
        contexts, batch = [], None
        for i, bgr in enumerate(bgrs):
            tensor, context = self.preprocessor(bgr)
            if batch is None:
                batch = self._batch_buffer(self.batch_size, tensor)
            batch[i] = tensor[0]  # the preprocessor's buffer is reused by the next frame
            contexts.append(context)
        self._synchronize()
        t1 = time.perf_counter()
        raw = self.backend.infer(batch)
        self._synchronize()
        t2 = time.perf_counter()
        results = []
        for i, (bgr, context) in enumerate(zip(bgrs, contexts)):
            started = time.perf_counter()
            result = self.postprocess(raw, context, i, bgr.shape[:2], settings, confidence)
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

    def postprocess(self, raw, context, index: int = 0, image_hw: tuple[int, int] | None = None,
                    settings: DetectionSettings | None = None, confidence: bool = False) -> Result:
        """The Result of frame ``index`` of the batch ``raw`` (the network's outputs),
        pre-processed with ``context``; ``image_hw`` defaults to the context's source size."""
        if image_hw is None:
            image_hw = context.source_hw
        return self._postprocess(raw, index, context, tuple(image_hw), settings or self.settings,
                                 confidence=confidence)
