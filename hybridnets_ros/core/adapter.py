"""What a network is to the rest of the package: the model adapter, and the one Result.

A network lives in ``core/models/<name>/``; its ``adapter.py`` holds one
:class:`ModelAdapter` subclass and ``core/registry.py`` lists it. Everything outside the
model folders (pipeline, backends, ROS layer, tools, commands) reads the adapter: its
pre-processing, the names and order of its raw outputs, its post-processing into a
:class:`Result`, classes and palette, the settings it adds, its checkpoint, which outputs
it can fill and how its grids are made. Nothing else names a network (docs/models.md).
"""
from __future__ import annotations

import collections
import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

from .postprocess import MAX_DETECTIONS, Detections

# What a network can fill (the outputs table's ``requires``): detections (boxes), a class
# per pixel, metric depth per pixel, and a lane-line mask.
DETECTIONS, SEMANTIC, DEPTH, LANE = "detections", "semantic", "depth", "lane"


@dataclass
class Result:
    """One frame's network result, at the image's size. Plain data: everything after the
    backend (grids, messages, files) reads it."""

    detections: Detections        # empty for networks without detections
    seg_mask: np.ndarray          # uint8 [h0, w0]: indices into the adapter's seg_classes
    timings_ms: dict[str, float] = field(default_factory=dict)
    depth_m: np.ndarray | None = None        # float32 [h0, w0] metres (networks with depth)
    # bool [h0, w0], for networks with a drivable-area and a lane-line mask; they may
    # overlap (a lane line on the road), so one class map cannot hold both.
    drivable_mask: np.ndarray | None = None
    lane_mask: np.ndarray | None = None
    batch_size: int = 1           # frames that went through the network together
    # uint8 [h0, w0]: the network's probability of each pixel's seg_mask class, 0-255; only
    # when the post-processing was asked for it (segmentation/confidence has subscribers).
    confidence: np.ndarray | None = None


@dataclass(frozen=True)
class DetectionSettings:
    """The thresholds of the detection post-processing, passed with every frame."""

    conf_threshold: float = 0.25
    iou_threshold: float = 0.3
    max_detections: int = MAX_DETECTIONS

    @classmethod
    def of(cls, config) -> DetectionSettings:
        return cls(config.conf_threshold, config.iou_threshold, config.max_detections)


class Preprocessor(Protocol):
    """A network's pre-processing, made once per pipeline (it may keep buffers)."""

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray | torch.Tensor, Any]:
        """uint8 BGR [H, W, 3] -> (float32 input [1, 3, h, w], this frame's context for the
        post-processing). The input may be a buffer the next call overwrites."""

    def input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw`` (what engines are built for)."""


class Postprocessor(Protocol):
    """A network's post-processing, made once per pipeline (it may cache per input size)."""

    def __call__(self, outputs: Sequence, index: int, context: Any,
                 image_hw: tuple[int, int], settings: DetectionSettings,
                 confidence: bool = False) -> Result:
        """The Result of frame ``index`` of the batch ``outputs`` (in ``output_names``
        order), pre-processed with ``context``, of an image of ``image_hw``; with
        ``confidence``, its Result.confidence from the network's own scores."""


class BenchPath(NamedTuple):
    """One way of running a network that ``hybridnets bench`` compares: a label suffix, the
    configuration changes, and the BACKEND:PRECISION variants it runs (None: every one)."""

    suffix: str
    settings: dict
    backends: tuple[str, ...] | None = None


class ModelAdapter(ABC):
    """One network. Subclasses set the class attributes and implement the methods."""

    name: str                                   # the `model` setting's value
    method: str                                 # VisionInfo.method: the network and its data
    summary: str                                # a few words for the `model` setting's help
    detection_classes: tuple[str, ...] = ()     # empty: no detections
    seg_classes: tuple[str, ...] = ()           # segmentation/label values 0, 1, ...
    seg_colors_rgb: tuple[tuple[int, int, int], ...] = ()
    products: frozenset[str] = frozenset()      # a subset of DETECTIONS, SEMANTIC, DEPTH, LANE
    drivable_classes: tuple[str, ...] = ()      # default of the drivable_classes setting
    obstacle_classes: tuple[str, ...] = ()      # default of the obstacle_classes setting
    no_surface_classes: tuple[str, ...] = ()    # their depth is no surface (sky): ignored
    tint_background: bool = True                # overlay: tint class 0 too (False: leave it)
    weights_name: str = ""                      # the released checkpoint's file name
    weights_source: str = ""                    # where it comes from (for error messages)
    weights_url: str = ""                       # its public address: download-weights fetches it
    weights_sha256: str = ""                    # the published file's SHA-256, where known
    checkpoint_label: str = ""                  # how a mismatch names what it expected
    input_name: str = "image"
    onnx_revision: int = 1                      # raise when the exported graph changes
    output_names: tuple[str, ...] = ()          # raw outputs, in forward()'s order
    input_multiple: int = 1                     # network input sides must be multiples of it
    uses_input_size: bool = False               # its pre-processing resizes to input_size
    # The settings it adds: a frozen dataclass of core.settings fields in its folder, a base
    # of the configuration (core.registry.ModelSettings); checks beyond range and choices
    # are setting_problems'.
    settings_type: type | None = None
    int8_calibration: bool = False              # its pre-processing calibrates int8 engines
    torch2trt_converts: bool = False            # torch2trt has converters for all its layers
    batches_cameras: bool = False               # several cameras' frames share one call
    processing_on_device: bool = False          # pre/post-processing can run on CUDA

    # ------------------------------------------------------------------- weights
    @property
    def downloadable(self) -> bool:
        """`hybridnets download-weights --model` can fetch the checkpoint."""
        return bool(self.weights_url)

    def cached_weights(self) -> Path:
        """Where the released checkpoint is looked for and downloaded to."""
        from .weights import cache_dir
        return cache_dir() / self.weights_name

    def download_weights(self, dest: str | Path, url: str = "", progress: bool = True,
                         timeout: float = 30.0) -> Path:
        """The released checkpoint (or the one at ``url``) saved at ``dest``, accepted only
        if it loads strictly into this network; WeightsError otherwise."""
        from .download import download
        from .weights import WeightsError

        if not (url or self.weights_url):
            raise WeightsError(f"{self.name} has no public checkpoint address: put "
                               f"{self.weights_name} from {self.weights_source} at {dest}")
        # The published file is what weights_sha256 describes; another address may differ.
        return download(url or self.weights_url, dest, self._check_download,
                        sha256="" if url else self.weights_sha256, progress=progress,
                        timeout=timeout)

    def _check_download(self, path: Path) -> None:
        options = {s.name: s.default for s in self.settings}
        self.load_module(path, **options)

    # ------------------------------------------------------------------ settings
    @property
    def settings(self) -> tuple[dataclasses.Field, ...]:
        """The fields of ``settings_type`` (none without one)."""
        return dataclasses.fields(self.settings_type) if self.settings_type else ()

    def options(self, config) -> dict[str, Any]:
        """The values of the settings this network adds, from a configuration."""
        return {s.name: getattr(config, s.name) for s in self.settings}

    def setting_problems(self, config) -> list[str]:
        """Reasons the network's settings are unacceptable beyond range and choices."""
        return []

    # ------------------------------------------------------------------- network
    @abstractmethod
    def build_module(self, **options) -> torch.nn.Module:
        """The network with random weights (same in every process), eval mode."""

    def load_module(self, weights: str | Path | None, **options) -> torch.nn.Module:
        """The network in eval mode with ``weights`` (strict load; WeightsError naming
        what does not fit), or random weights when None."""
        from .weights import load_checkpoint

        with torch.random.fork_rng():  # random weights are the same in every process
            torch.manual_seed(0)
            model = self.build_module(**options)
        if weights is not None:
            load_checkpoint(model, weights, self.checkpoint_label or self.name)
        return model.eval().requires_grad_(False)

    def pack(self, outputs) -> tuple:
        """A network's outputs as a named tuple of ``output_names`` (what backends give)."""
        outputs = (outputs,) if isinstance(outputs, (torch.Tensor, np.ndarray)) else tuple(outputs)
        return _output_tuple(self.name, self.output_names)(*outputs)

    def onnx_metadata(self) -> dict[str, str]:
        """What an exported file records about the network besides its shape and weights."""
        return {"model": self.name, "class_names": ",".join(self.detection_classes),
                "seg_class_names": ",".join(self.seg_classes)}

    def export_extras(self, onnx_path: Path, input_hw: tuple[int, int]) -> list[Path]:
        """Files written beside an exported ONNX file for consumers outside Python."""
        return []

    # ------------------------------------------------------------ per frame
    @abstractmethod
    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     **options) -> Preprocessor:
        """The pre-processing for ``input_size`` (where the network uses it); ``on_device``
        (only with ``processing_on_device``) runs it on ``device``."""

    @abstractmethod
    def postprocessor(self, on_device: bool = False, **options) -> Postprocessor:
        """The post-processing into a Result."""

    def surfaces(self, config) -> Surfaces:
        """How the drivable mask and the grids come from a Result under ``config``'s
        class lists (built again when they change)."""
        from .surfaces import ClassSurfaces
        return ClassSurfaces(self, config)

    # ------------------------------------------------------------------ derived
    def class_ids(self, names) -> np.ndarray:
        """Indices of class ``names`` in seg_classes (ValueError naming an unknown one)."""
        unknown = [n for n in names if n not in self.seg_classes]
        if unknown:
            raise ValueError(f"{self.name} has no class {', '.join(map(repr, unknown))}; its "
                             f"classes: {', '.join(self.seg_classes)}")
        return np.array([self.seg_classes.index(n) for n in names], np.int64)

    def bench_paths(self, config) -> tuple[BenchPath, ...]:
        """Each path ``hybridnets bench`` compares, the exact one first; one path: nothing
        to compare."""
        return (BenchPath("", {}),)

    def bench_backends(self, device: str) -> tuple[str, ...]:
        """The BACKEND:PRECISION variants ``hybridnets bench`` runs by default."""
        return ("torch:fp32", "onnxruntime:fp32", "openvino:fp32")

    def __repr__(self) -> str:
        return f"<model adapter {self.name}>"


class Surfaces(Protocol):
    """The drivable mask and the bird's-eye grids of a Result (core.surfaces)."""

    def drivable_mask(self, result: Result) -> np.ndarray: ...

    def grids(self, result: Result, projector, depth_projector=None): ...


_OUTPUT_TUPLES: dict[tuple, type] = {}


def _output_tuple(name: str, fields: tuple[str, ...]) -> type:
    key = (name, fields)
    if key not in _OUTPUT_TUPLES:
        _OUTPUT_TUPLES[key] = collections.namedtuple(f"{name.capitalize()}Outputs", fields)
    return _OUTPUT_TUPLES[key]
