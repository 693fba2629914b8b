"""One frame's ROS path, shared by the node, ``hybridnets replay`` and ``hybridnets bench``:

    image message (raw or compressed) + latest CameraInfo + camera pose (setting or TF)
      -> BGR image -> pipeline -> bird's-eye projection -> the wanted output messages

with a rejection reason when the image cannot be used, the reason when there are no
grids, and per-stage timings. Callers decide what to do with those (the node logs once and
counts in diagnostics, replay summarises); nobody else converts, projects or builds.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..core.bev import BevProjector, GridSpec
from ..core.camera import CameraModel
from ..pipeline.config import NodeConfig
from ..pipeline.pipeline import Pipeline, Result
from .conversions import ImageConversionError, to_bgr
from .outputs import ALWAYS, BY_NAME, FrameProducts, ModelProducts, enabled_outputs

# (R_ground_optical, t) of the image's frame in the ground frame, or None
TransformLookup = Callable[[str, Header], "tuple[np.ndarray, np.ndarray] | None"]


class GridUnavailable(Exception):
    """No grids for this frame. ``reason`` is a short category; ``bad_input`` tells a
    message that is wrong (counted as a rejection) from state not there yet (said once)."""

    def __init__(self, reason: str, detail: str, bad_input: bool = False):
        super().__init__(detail)
        self.reason = reason
        self.bad_input = bad_input


def camera_model_from_info(info: CameraInfo, pose, rectified: bool,
                           transform=None) -> CameraModel:
    """CameraModel from a CameraInfo and either a pose [x,y,z,r,p,y] of the camera body
    frame or a (R_ground_optical, t) transform; raises ValueError on bad calibration."""
    if rectified and any(info.p):
        K = np.asarray(info.p, np.float64).reshape(3, 4)[:, :3]
        D = None
    else:
        K = np.asarray(info.k, np.float64)
        D = np.asarray(info.d, np.float64) if len(info.d) else None
    if transform is not None:
        return CameraModel.from_transform(K, info.width, info.height, *transform, D=D)
    return CameraModel.from_pose(K, info.width, info.height, pose, D=D)


class ProjectorCache:
    """The bird's-eye lookup for the current calibration, pose and grid; rebuilt only when
    one of them changes."""

    def __init__(self):
        self.projector: BevProjector | None = None
        self._key = None

    def get(self, info: CameraInfo | None, image_hw, config: NodeConfig,
            transform=None, grid: GridSpec | None = None) -> tuple[BevProjector, bool]:
        """(projector, rebuilt?) onto ``grid`` (default: the config's); raises GridUnavailable."""
        grid = grid or config.grid
        if info is None:
            raise GridUnavailable("no camera_info", "no CameraInfo received yet")
        if (info.height, info.width) != tuple(image_hw):
            raise GridUnavailable("camera_info size mismatch",
                                  f"camera_info is {info.width}x{info.height} but the image is "
                                  f"{image_hw[1]}x{image_hw[0]}", bad_input=True)
        key = (tuple(info.k), tuple(info.d), tuple(info.p), info.width, info.height,
               config.camera_pose, None if transform is None else
               tuple(np.round(np.concatenate([transform[0].ravel(), transform[1]]), 6)),
               config.rectified, grid)
        if key == self._key:
            return self.projector, False
        try:
            camera = camera_model_from_info(info, config.camera_pose, config.rectified, transform)
            projector = BevProjector(camera, grid)
        except (ValueError, cv2.error) as exc:
            raise GridUnavailable("invalid camera_info", f"cannot use camera_info: {exc}",
                                  bad_input=True) from None
        self.projector, self._key = projector, key
        return self.projector, True


@dataclass
class FrameRequest:
    """One image message for one camera's processor (see :func:`process_batch`)."""

    processor: FrameProcessor
    msg: object
    wanted: object = None           # output names; None: every enabled output
    header: Header | None = None    # stamp the outputs with this instead of msg.header


@dataclass
class FrameOutcome:
    messages: dict[str, object] = field(default_factory=dict)  # output name -> message
    timings_ms: dict[str, float] = field(default_factory=dict)
    rejected: ImageConversionError | None = None  # the image could not be used
    no_grids: GridUnavailable | None = None       # grids were wanted but are not possible
    projector_rebuilt: bool = False
    products: FrameProducts | None = None

    @property
    def result(self) -> Result | None:
        return self.products.result if self.products else None


class FrameProcessor:
    def __init__(self, pipeline: Pipeline, config: NodeConfig,
                 transform_lookup: TransformLookup | None = None):
        self.pipeline = pipeline
        self.transform_lookup = transform_lookup
        self.camera_info: CameraInfo | None = None
        self.projectors = ProjectorCache()
        self.fused_projectors = ProjectorCache()  # onto the surround grid (several cameras)
        self.config = config
        self.update_config(config)

    def update_config(self, config: NodeConfig) -> None:
        """Run-time changes (thresholds, pose, grid) take effect from the next frame."""
        self.config = config
        self.pipeline.conf_threshold = config.conf_threshold
        self.pipeline.iou_threshold = config.iou_threshold
        self.enabled = enabled_outputs(config)

    def process(self, msg, wanted=None, header: Header | None = None) -> FrameOutcome:
        """The output messages of ``wanted`` (default: every enabled output) for one image
        message; detections are always built. ``header``: the one to stamp the outputs with
        when ``msg``'s is not an rclpy Header (a bag reader's message)."""
        return process_batch([FrameRequest(self, msg, wanted, header)])[0]

    def _finish(self, request: FrameRequest, bgr: np.ndarray, result: Result,
                outcome: FrameOutcome, conversion_ms: float) -> None:
        """Grids and the wanted messages of one frame whose network result is in."""
        header = request.header or request.msg.header
        wanted = (self.enabled if request.wanted is None
                  else self.enabled & set(request.wanted)) | ALWAYS
        products = FrameProducts(header, bgr, result, self.pipeline.spec.class_names,
                                 self.config.ground_frame, self.config.points_z)
        t2 = time.perf_counter()
        if any(BY_NAME[name].needs_grids for name in wanted):
            try:
                products.projector, outcome.projector_rebuilt = self._projector(header, bgr.shape[:2])
                products.grids = products.projector.project(result.seg_mask)
            except GridUnavailable as exc:
                outcome.no_grids = exc
        t3 = time.perf_counter()
        outcome.messages = {name: BY_NAME[name].build(products) for name in wanted
                            if products.grids is not None or not BY_NAME[name].needs_grids}
        t4 = time.perf_counter()
        outcome.products = products
        outcome.timings_ms = dict(conversion=conversion_ms, **result.timings_ms,
                                  grids=(t3 - t2) * 1e3, messages=(t4 - t3) * 1e3)

    def _projector(self, header: Header, image_hw) -> tuple[BevProjector, bool]:
        return self.projectors.get(self.camera_info, image_hw, self.config, self._transform(header))

    def _transform(self, header: Header):
        """The TF transform of the image's frame when camera_pose is empty, else None."""
        transform = None
        if not self.config.camera_pose:
            if self.transform_lookup is not None:
                transform = self.transform_lookup(self.config.ground_frame, header)
            if transform is None:
                raise GridUnavailable("no pose", f"camera_pose is empty and no TF from "
                                      f"'{self.config.ground_frame}' to '{header.frame_id}' is "
                                      "available")
        return transform

    def fused_projector(self, header: Header, image_hw, grid: GridSpec) -> BevProjector:
        """This camera's lookup onto the surround grid ``grid`` (several cameras), from the
        same CameraInfo and pose as its own grids; raises GridUnavailable."""
        transform = self._transform(header)
        return self.fused_projectors.get(self.camera_info, image_hw, self.config, transform,
                                         grid=grid)[0]

    def model_products(self, header: Header) -> ModelProducts:
        """What the model-description outputs (VisionInfo) are built from."""
        spec = self.pipeline.spec
        return ModelProducts(header, "HybridNets (BDD100K)", spec.class_names, spec.seg_class_names)


def process_batch(requests: list[FrameRequest]) -> list[FrameOutcome]:
    """Several cameras' image messages, each with its own processor (CameraInfo, pose,
    grids) over one shared pipeline, through one network call (``Pipeline.run_batch``);
    outcomes in the order of ``requests``. One request is :meth:`FrameProcessor.process`."""
    outcomes = [FrameOutcome() for _ in requests]
    ready = []  # (request, outcome, bgr, conversion ms) of the usable images
    for request, outcome in zip(requests, outcomes):
        t0 = time.perf_counter()
        try:
            bgr = to_bgr(request.msg)
        except ImageConversionError as exc:
            outcome.rejected = exc
            continue
        ready.append((request, outcome, bgr, (time.perf_counter() - t0) * 1e3))
    if ready:
        pipeline = ready[0][0].processor.pipeline
        results = pipeline.run_batch([bgr for _, _, bgr, _ in ready])
        for (request, outcome, bgr, conversion_ms), result in zip(ready, results):
            request.processor._finish(request, bgr, result, outcome, conversion_ms)
    return outcomes
