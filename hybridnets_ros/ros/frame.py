"""One frame's ROS path, shared by the node, ``hybridnets replay`` and ``hybridnets bench``:

    image message (raw or compressed) + latest CameraInfo + camera pose (setting or TF)
      -> BGR image -> pipeline -> track ids and ground positions of the detections
      -> bird's-eye projection -> the wanted output messages

with a rejection reason when the image cannot be used, the reason when there are no
grids, and per-stage timings. Callers decide what to do with those (the node logs once and
counts in diagnostics, replay summarises); nobody else converts, projects or builds.
"""
from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..core.adapter import DetectionSettings
from ..core.bev import BevProjector, GridSpec
from ..core.depth_grid import DepthProjector
from ..core.camera import CalibrationError, CameraModel
from ..core.objects3d import LENGTH_PRIOR_BY_NAME, box_estimates, ground_positions
from ..core.road_geometry import RoadGeometryEstimator, RoadGeometrySettings
from ..core.semantic_cloud import GroundPoints, Sampler
from ..core.tracking import Tracker, TrackerSettings
from ..pipeline.config import NodeConfig
from ..pipeline.engines import EngineBuild, EngineBuilds
from ..core.sources import InputError
from ..pipeline.pipeline import Pipeline, Result, refuse_degenerate
from .conversions import ImageConversionError, to_bgr
from .outputs import (ALWAYS, BY_NAME, NEEDS_CONFIDENCE, NO_GRIDS_NEEDED, OUTPUTS, ROAD_EDGES,
                      ROAD_LANES, FrameProducts,
                      ModelProducts, enabled_outputs)

# (R_ground_optical, t) of the image's frame in the ground frame, or None
TransformLookup = Callable[[str, Header], "tuple[np.ndarray, np.ndarray] | None"]

# A calibration or TF pose whose values change with every frame (a self-calibrating driver,
# a jittering transform) rebuilds the bird's-eye and depth lookups (tens to hundreds of ms)
# at most once per this many frames or seconds of image time, whichever comes first; the
# camera model itself (3D detections) follows every change (about a millisecond).
REBUILD_FRAMES = 30
REBUILD_PERIOD_S = 1.0


class GridProblem(enum.Enum):
    """Why a frame has no grids; the value is how logs and /diagnostics name it."""

    NO_CAMERA_INFO = "no camera_info"
    INVALID_CAMERA_INFO = "invalid camera_info"
    CAMERA_INFO_SIZE = "camera_info size mismatch"
    IMPOSSIBLE_POSE = "impossible camera pose"
    NO_POSE = "no pose"

    def __str__(self) -> str:
        return self.value


class GridUnavailable(Exception):
    """No grids for this frame, and the ``reason``; ``bad_input`` tells a message that is
    wrong (counted as a rejection) from state not there yet (said once)."""

    def __init__(self, reason: GridProblem, detail: str, bad_input: bool = False):
        super().__init__(detail)
        self.reason = reason
        self.bad_input = bad_input
        self.repeated = False  # the same bad message as the previous frame's (count it once)


def camera_model_from_info(info: CameraInfo, pose, rectified: bool,
                           transform=None) -> CameraModel:
    """CameraModel from a CameraInfo and either a pose [x,y,z,r,p,y] of the camera body
    frame or a (R_ground_optical, t) transform; raises CalibrationError naming the
    CameraInfo field at fault (ValueError or cv2.error on what no check foresaw)."""
    if rectified and any(info.p):  # P projects the rectified image: no distortion left
        K, D, model, k_field = (np.asarray(info.p, np.float64).reshape(3, 4)[:, :3], None,
                                "plumb_bob", "p")
    else:
        K, D, model, k_field = np.asarray(info.k, np.float64), info.d, info.distortion_model, "k"
    try:
        if transform is not None:
            return CameraModel.from_transform(K, info.width, info.height, *transform, D=D,
                                              distortion_model=model)
        return CameraModel.from_pose(K, info.width, info.height, pose, D=D,
                                     distortion_model=model)
    except CalibrationError as exc:
        exc.field = k_field if exc.field == "k" else exc.field
        raise


def invalid_camera_info(exc: Exception) -> GridUnavailable:
    """The rejection of a CameraInfo that camera_model_from_info refused."""
    field = getattr(exc, "field", None)
    detail = f"camera_info.{field}: {exc}" if field else f"cannot use camera_info: {exc}"
    return GridUnavailable(GridProblem.INVALID_CAMERA_INFO, detail, bad_input=True)


def calibration_values(info: CameraInfo) -> tuple:
    """What of a CameraInfo the camera model depends on: equal values, equal model (as
    bytes: a NaN equals itself, so a bad message re-sent is the same message)."""
    return (info.width, info.height, info.distortion_model,
            *(np.asarray(values, np.float64).tobytes() for values in (info.k, info.d, info.p)))


class ProjectorCache:
    """The camera model for the current calibration and pose, and the bird's-eye lookup for
    it and the grid; each rebuilt only when the values it depends on change, the lookup
    at most once per REBUILD_FRAMES frames or REBUILD_PERIOD_S of image time when only the
    calibration or TF pose changed (settings, grid and image size take effect at once)."""

    def __init__(self):
        self.projector: BevProjector | None = None
        self._key = None
        self._camera: CameraModel | None = None
        self._camera_key = None  # (settings, streamed values) the camera model was built for
        self._pose_problem: str | None = None  # why the camera model's pose cannot be right
        self._built_stamp: float | None = None  # image time of the lookup's build
        self._frames_since_build = 0

    def get(self, info: CameraInfo | None, image_hw, config: NodeConfig,
            transform=None, grid: GridSpec | None = None,
            stamp: float | None = None) -> tuple[BevProjector, str | None]:
        """(projector onto ``grid`` (default: the config's), why it was built this call:
        "first", "settings" (grid, pose setting, image size), "calibration" (CameraInfo or
        TF values) or None: reused). ``stamp``: the image's time in seconds. Raises
        GridUnavailable."""
        grid = grid or config.grid
        camera = self.camera(info, image_hw, config, transform)
        key = (self._camera_key, grid)
        self._frames_since_build += 1
        if key == self._key:
            return self.projector, None
        cause = ("first" if self._key is None else
                 "settings" if (key[1], key[0][0]) != (self._key[1], self._key[0][0])
                 else "calibration")
        if cause == "calibration" and self._recent(stamp):
            return self.projector, None  # a streamed change: the lookup follows it soon
        try:
            projector = BevProjector(camera, grid)
        except (ValueError, cv2.error) as exc:
            raise GridUnavailable(GridProblem.INVALID_CAMERA_INFO, f"cannot use camera_info: {exc}",
                                  bad_input=True) from None
        self.projector, self._key = projector, key
        self._built_stamp, self._frames_since_build = stamp, 0
        return self.projector, cause

    def _recent(self, stamp: float | None) -> bool:
        """Whether the lookup was built too recently to rebuild it for a streamed change."""
        if self._frames_since_build >= REBUILD_FRAMES:
            return False
        if stamp is None or self._built_stamp is None:
            return True
        return 0.0 <= stamp - self._built_stamp < REBUILD_PERIOD_S

    def camera(self, info: CameraInfo | None, image_hw, config: NodeConfig,
               transform=None) -> CameraModel:
        """The camera model of ``info`` and the pose; raises GridUnavailable."""
        if info is None:
            raise GridUnavailable(GridProblem.NO_CAMERA_INFO, "no CameraInfo received yet")
        if (info.height, info.width) != tuple(image_hw):
            raise GridUnavailable(GridProblem.CAMERA_INFO_SIZE,
                                  f"camera_info is {info.width}x{info.height} but the image is "
                                  f"{image_hw[1]}x{image_hw[0]}", bad_input=True)
        # Settings and the image size act at once; streamed values may change every frame.
        key = ((config.camera_pose, config.rectified, info.width, info.height),
               (calibration_values(info), None if transform is None else
                tuple(np.round(np.concatenate([transform[0].ravel(), transform[1]]), 6))))
        if key != self._camera_key:
            try:
                self._camera = camera_model_from_info(info, config.camera_pose, config.rectified,
                                                      transform)
            except (ValueError, cv2.error) as exc:
                raise invalid_camera_info(exc) from None
            self._camera_key = key
            problem = self._camera.pose_problem()
            source = ("from TF" if transform is not None
                      else str([round(v, 3) for v in config.camera_pose]))
            self._pose_problem = problem and (f"impossible camera pose {source} in "
                                              f"{config.ground_frame}: {problem}")
        if self._pose_problem:
            raise GridUnavailable(GridProblem.IMPOSSIBLE_POSE, self._pose_problem)
        return self._camera


@dataclass
class FrameRequest:
    """One image message for one camera's processor (see :func:`process_batch`)."""

    processor: FrameProcessor
    msg: object
    wanted: object = None           # output names; None: every enabled output
    header: Header | None = None    # stamp the outputs with this instead of msg.header
    emit: Callable[[str, object], None] | None = None  # gets each message as it is built


@dataclass
class FrameOutcome:
    messages: dict[str, object] = field(default_factory=dict)  # output name -> message
    timings_ms: dict[str, float] = field(default_factory=dict)
    rejected: ImageConversionError | None = None  # the image could not be used
    no_grids: GridUnavailable | None = None       # grids or 3D were wanted but are not possible
    projector_rebuilt: str | None = None          # why the lookup was built (ProjectorCache.get)
    products: FrameProducts | None = None
    engine_build: EngineBuild | None = None       # not run: its engine is being built

    @property
    def result(self) -> Result | None:
        return self.products.result if self.products else None


class FrameProcessor:
    def __init__(self, pipeline: Pipeline, config: NodeConfig,
                 transform_lookup: TransformLookup | None = None):
        self.pipeline = pipeline
        self.transform_lookup = transform_lookup
        self.camera_info: CameraInfo | None = None
        self._rejected_info: CameraInfo | None = None  # the last bad CameraInfo reported
        self._checked: tuple | None = None  # (calibration values, why unusable) last checked
        self.projectors = ProjectorCache()
        self.fused_projectors = ProjectorCache()  # onto the surround grid (several cameras)
        self.config = config
        self.tracker = Tracker(config.track_max_missed, config.track_min_iou,
                               config.track_max_distance)
        self.shown_markers: set[tuple[str, int]] = set()  # what RViz holds of the markers
        self.road: RoadGeometryEstimator | None = None  # this camera's, tracked over frames
        self._odom_pose: tuple[float, float, float] | None = None  # (x, y, yaw) at its last update
        self.adapter = pipeline.adapter
        names = self.adapter.detection_classes
        self.length_prior = {i: LENGTH_PRIOR_BY_NAME[n] for i, n in enumerate(names)
                             if n in LENGTH_PRIOR_BY_NAME}
        self.update_config(config)

    def set_camera_info(self, info: CameraInfo) -> GridUnavailable | None:
        """Take ``info`` as the latest calibration; returns why it is unusable (None: it
        looks fine) so that a caller can count a bad message once, when it arrives. A bad
        one still replaces the previous: the grids stay off until a good one comes."""
        self.camera_info = info
        values = (calibration_values(info), self.config.rectified)
        if self._checked is None or self._checked[0] != values:  # a driver re-sends the same
            try:  # K, D and the size only; the pose does not matter here
                camera_model_from_info(info, None, self.config.rectified,
                                       (np.eye(3), np.zeros(3)))
                self._checked = (values, None)
            except (ValueError, cv2.error) as exc:
                self._checked = (values, invalid_camera_info(exc))
        problem = self._checked[1]
        if problem is None:
            return None
        self._rejected_info = info
        return GridUnavailable(problem.reason, str(problem), bad_input=True)

    @property
    def camera_info_problem(self) -> str | None:
        """Why the latest CameraInfo was refused (None: it was not, or none came yet)."""
        if self.camera_info is None or self._checked is None or self._checked[1] is None:
            return None
        if self._checked[0] != (calibration_values(self.camera_info), self.config.rectified):
            return None  # not checked yet (set without set_camera_info)
        return str(self._checked[1])

    def update_config(self, config: NodeConfig) -> None:
        """Run-time changes (thresholds, pose, grid, classes, tracking) take effect from the
        next frame. Each setting reaches its user here, as a whole object (the node calls
        this from another thread than the frames')."""
        self.config = config
        self.pipeline.settings = DetectionSettings.of(config)  # the pipeline holds them
        self.enabled = enabled_outputs(config)
        self.surfaces = self.adapter.surfaces(config)
        self.tracker.settings = TrackerSettings(config.track_max_missed, config.track_min_iou,
                                                config.track_max_distance)
        self._depth_projector: tuple[BevProjector, DepthProjector] | None = None
        self._sampler: Sampler | None = None
        self._ground_points: tuple[tuple, GroundPoints] | None = None  # (its key, it)
        road_settings = RoadGeometrySettings(x_max=config.road_max_range)
        if self.road is None or self.road.settings != road_settings:
            self.road = RoadGeometryEstimator(road_settings)

    def wanted(self, names=None) -> frozenset[str]:
        """The outputs to build of ``names`` (None: every enabled one), detections always."""
        return frozenset((self.enabled if names is None else self.enabled & set(names))
                         | (ALWAYS & self.enabled))

    def process(self, msg, wanted=None, header: Header | None = None,
                emit: Callable[[str, object], None] | None = None) -> FrameOutcome:
        """The output messages of ``wanted`` (default: every enabled output) for one image
        message; detections are always built. ``header``: the one to stamp the outputs with
        when ``msg``'s is not an rclpy Header (a bag reader's message). ``emit(name, message)``
        is called as soon as each message is built, in table order (detections first), so
        that a publisher sends the planner's data before the debug pictures are drawn."""
        return process_batch([FrameRequest(self, msg, wanted, header, emit)])[0]

    def _finish(self, request: FrameRequest, bgr: np.ndarray, result: Result,
                outcome: FrameOutcome, conversion_ms: float) -> None:
        """3D, grids and the wanted messages of one frame whose network result is in."""
        header = request.header or request.msg.header
        wanted = self.wanted(request.wanted)
        emit = request.emit
        products = FrameProducts(header, bgr, result, self.adapter, self.surfaces,
                                 self.config.ground_frame, self.config.points_z,
                                 points_decimation=self.config.points_decimation,
                                 shown_markers=self.shown_markers,
                                 sampler=self._sampler_for(bgr.shape[:2]))
        t2 = time.perf_counter()
        geometric = {name for name in wanted if BY_NAME[name].needs_grids}
        wants_objects = any(BY_NAME[name].needs_camera for name in wanted)
        wants_road = any(BY_NAME[name].needs_road for name in wanted)
        # The camera model is cached: trying it every frame costs a comparison (and the TF
        # lookup without camera_pose); its ground positions help tracking too.
        transform = None
        try:
            transform = self._transform(header)
            products.camera = self.projectors.camera(self.camera_info, bgr.shape[:2], self.config,
                                                     transform)
        except GridUnavailable as exc:
            # An impossible pose is news even when only the fused grids use this camera.
            if (geometric or wants_objects or wants_road
                    or exc.reason is GridProblem.IMPOSSIBLE_POSE):
                self._no_grids(outcome, exc)
        self._objects(products, wants_objects)
        t3 = time.perf_counter()
        if geometric and products.camera is not None:
            try:
                products.projector, outcome.projector_rebuilt = self.projectors.get(
                    self.camera_info, bgr.shape[:2], self.config, transform,
                    stamp=_seconds(header))
                if result.depth_m is not None:
                    products.depth_projector = self._depth_projector_for(products.projector)
                if geometric - NO_GRIDS_NEEDED:  # the clouds alone need no grid
                    products.grids = products.surfaces.grids(result, products.projector,
                                                             products.depth_projector)
            except GridUnavailable as exc:
                self._no_grids(outcome, exc)
        t4 = time.perf_counter()
        if "segmentation_points" in wanted and products.projector is not None:
            products.ground_points = self._ground_points_for(products.projector)
        t5 = time.perf_counter()
        if wants_road and products.camera is not None:
            # Only what a wanted output shows: lanes, drivable edges or both.
            products.road = self.road.update(
                products.camera, result.lane_mask if wanted & ROAD_LANES else None,
                products.surfaces.drivable_mask(result) if wanted & ROAD_EDGES else None,
                _seconds(header), self._motion(header))
        t5_road = time.perf_counter()
        cloud_ms = 0.0  # segmentation/points' message, its own stage with its lookup
        for row in OUTPUTS:
            if (row.name in wanted and (products.projector is not None or not row.needs_grids)
                    and (products.camera is not None or not row.needs_camera)
                    and (products.road is not None or not row.needs_road)):
                started = time.perf_counter()
                outcome.messages[row.name] = message = row.build(products)
                if row.name == "segmentation_points":
                    cloud_ms = (time.perf_counter() - started) * 1e3
                if emit is not None:
                    emit(row.name, message)
        t6 = time.perf_counter()
        outcome.products = products
        outcome.timings_ms = dict(conversion=conversion_ms, **result.timings_ms,
                                  objects=(t3 - t2) * 1e3, grids=(t4 - t3) * 1e3,
                                  semantic=(t5 - t4) * 1e3 + cloud_ms, road=(t5_road - t5) * 1e3,
                                  messages=(t6 - t5_road) * 1e3 - cloud_ms)

    def _no_grids(self, outcome: FrameOutcome, problem: GridUnavailable) -> None:
        outcome.no_grids = problem
        if problem.bad_input:  # a bad CameraInfo fails every frame until the next one
            problem.repeated = self.camera_info is self._rejected_info
            self._rejected_info = self.camera_info

    def _depth_projector_for(self, projector: BevProjector) -> DepthProjector:
        """The depth lookup of this projector's camera and grid, built when they change."""
        if self._depth_projector is None or self._depth_projector[0] is not projector:
            self._depth_projector = (projector, DepthProjector(projector.camera, projector.grid))
        return self._depth_projector[1]

    def _sampler_for(self, image_hw) -> Sampler | None:
        """The semantic_output_scale sampling of images of ``image_hw`` (None: scale 1)."""
        scale = self.config.semantic_output_scale
        if scale == 1.0:
            return None
        if (self._sampler is None or self._sampler.image_hw != tuple(image_hw)
                or self._sampler.scale != scale):
            self._sampler = Sampler(image_hw, scale)
        return self._sampler

    def _ground_points_for(self, projector: BevProjector) -> GroundPoints:
        """segmentation/points' lookup for this projector's camera (built with it, so a
        streamed calibration rebuilds it no more often), the scale and max_range."""
        key = (projector, self.config.semantic_output_scale, self.config.max_range)
        if self._ground_points is None or self._ground_points[0] != key:
            self._ground_points = (key, GroundPoints(projector.camera, *key[1:]))
        return self._ground_points[1]

    def _objects(self, products: FrameProducts, wants_3d: bool) -> None:
        """Ground contacts (with a camera model), track ids and, for the 3D outputs, box
        estimates of the frame's detections."""
        detections, camera, config = products.result.detections, products.camera, self.config
        if camera is not None:
            products.contacts = ground_positions(camera, detections.boxes, config.rectified,
                                                 config.max_range)
        # Switching tracking off ends every track; ids keep counting on when it comes back.
        if not config.tracking:
            if len(self.tracker.track_ids):
                self.tracker.reset()
        else:
            products.track_ids = self.tracker.update(
                detections.boxes, detections.classes,
                None if products.contacts is None else products.contacts.points,
                _seconds(products.header))
            products.velocities = self.tracker.velocities
        if wants_3d and camera is not None:
            products.boxes_3d = box_estimates(camera, detections.boxes, products.contacts.points,
                                              detections.classes, self.length_prior,
                                              rectified=config.rectified)

    def _motion(self, header: Header) -> tuple[float, float, float] | None:
        """The vehicle's (dx, dy, dyaw) since the previous road estimate, in the previous
        ground frame, from TF of ground_frame in odom_frame (None: no odom_frame or no TF).
        The lookup gives TF's latest: the motion between two frames' processing, which is
        theirs while the node keeps pace."""
        pose = None
        if self.config.odom_frame and self.transform_lookup is not None:
            found = self.transform_lookup(self.config.odom_frame,
                                          Header(stamp=header.stamp,
                                                 frame_id=self.config.ground_frame))
            if found is not None:
                rotation, translation = found
                pose = (float(translation[0]), float(translation[1]),
                        math.atan2(rotation[1, 0], rotation[0, 0]))
        previous, self._odom_pose = self._odom_pose, pose
        if pose is None or previous is None:
            return None
        dx, dy = pose[0] - previous[0], pose[1] - previous[1]
        c, s = math.cos(previous[2]), math.sin(previous[2])
        dyaw = math.remainder(pose[2] - previous[2], math.tau)
        return c * dx + s * dy, -s * dx + c * dy, dyaw

    def _transform(self, header: Header):
        """The camera's (R, t) in ground_frame from TF when camera_pose is empty (None when
        camera_pose is set); raises GridUnavailable when neither gives a pose."""
        if self.config.camera_pose:
            return None
        transform = None
        if self.transform_lookup is not None:
            transform = self.transform_lookup(self.config.ground_frame, header)
        if transform is None:
            raise GridUnavailable(GridProblem.NO_POSE, f"camera_pose is empty and no TF from "
                                  f"'{self.config.ground_frame}' to '{header.frame_id}' is "
                                  "available")
        return transform

    def fused_projector(self, header: Header, image_hw, grid: GridSpec) -> BevProjector:
        """This camera's lookup onto the surround grid ``grid`` (several cameras), from the
        same CameraInfo and pose as its own grids; raises GridUnavailable."""
        transform = self._transform(header)
        return self.fused_projectors.get(self.camera_info, image_hw, self.config, transform,
                                         grid=grid, stamp=_seconds(header))[0]

    def model_products(self, header: Header) -> ModelProducts:
        """What the model-description outputs (VisionInfo) are built from."""
        adapter = self.adapter
        return ModelProducts(header, adapter.method, adapter.detection_classes,
                             adapter.seg_classes)


def _seconds(header: Header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def process_batch(requests: list[FrameRequest],
                  engines: EngineBuilds | None = None) -> list[FrameOutcome]:
    """Several cameras' image messages, each with its own processor (CameraInfo, pose,
    grids) over one shared pipeline, through one network call (``Pipeline.run_batch``);
    outcomes in the order of ``requests``. One request is :meth:`FrameProcessor.process`.
    With ``engines``, frames whose engine does not exist yet are not run: their outcome
    names the build they wait for (started in the background)."""
    outcomes = [FrameOutcome() for _ in requests]
    ready = []  # (request, outcome, bgr, conversion ms) of the usable images
    for request, outcome in zip(requests, outcomes):
        t0 = time.perf_counter()
        try:
            bgr = to_bgr(request.msg, request.processor.config.max_image_pixels)
            refuse_degenerate(bgr)
        except ImageConversionError as exc:
            outcome.rejected = exc
            continue
        except InputError as exc:  # a size the network is not run on
            outcome.rejected = ImageConversionError(exc.kind, str(exc))
            continue
        ready.append((request, outcome, bgr, (time.perf_counter() - t0) * 1e3))
    if ready and engines is not None:
        run, waiting, _ = engines.split([bgr for _, _, bgr, _ in ready])
        for index, build in waiting.items():
            ready[index][1].engine_build = build
        ready = [ready[index] for index in run]
    if ready:
        # One pipeline, with its thresholds, for every camera.
        processor = ready[0][0].processor
        # The confidence costs post-processing time: computed when any camera wants it.
        confidence = any(NEEDS_CONFIDENCE & request.processor.wanted(request.wanted)
                         for request, *_ in ready)
        results = processor.pipeline.run_batch([bgr for _, _, bgr, _ in ready],
                                               confidence=confidence)
        for (request, outcome, bgr, conversion_ms), result in zip(ready, results):
            request.processor._finish(request, bgr, result, outcome, conversion_ms)
    return outcomes
