"""The node's configuration: one typed object, one table of settings, validated in one place.

Every setting of hybridnets_node is a field of :class:`NodeConfig`, a plain frozen
dataclass; its metadata (core.settings: the description, whether it may change at run
time, its range or choices, its command-line option) is the one table that the ROS
parameters, the commands' options and docs/parameters.md are made from. The settings a
network adds are declared in its folder and join through core.registry.ModelSettings. The
node,
``hybridnets replay`` and the other commands build a NodeConfig from parameters, a params
file or command-line options, and :func:`problems` is the only place that decides whether
values are acceptable (the adapters' checks and the grid extents included). No ROS types
here.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends.registry import BACKENDS, PRECISIONS
from ..core.adapter import DetectionSettings, ModelAdapter
from ..core.bev import GridSpec
from ..core.camera import optical_transform, pose_problem
from ..core.lru import ENGINES_KEPT
from ..core.registry import ADAPTERS, DEFAULT_MODEL, ModelSettings
from ..core.settings import field_types, item_type, setting
from ..core.sources import MAX_IMAGE_PIXELS
from .stats import RECENT_S

BACKEND_CHOICES = ("auto",) + BACKENDS
MODEL_CHOICES = tuple(ADAPTERS)
# Settings holding lists of class names.
CLASS_LISTS = ("drivable_classes", "obstacle_classes")
# A grid beyond this is not a planner's local map but a memory problem: 4 M cells is
# 200 m x 200 m at 0.1 m (docs/benchmarks.md: the lookup table's size).
MAX_GRID_CELLS = 4_000_000
# A camera name becomes a namespace of topics: ROS name tokens separated by '/'.
CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


class ConfigError(ValueError):
    """One or more settings are unacceptable; the message names each one and why."""


@dataclass(frozen=True)
class CommonSettings:
    """The settings every network shares; NodeConfig adds those of the networks."""

    model: str = setting(DEFAULT_MODEL, "the network: " + ", ".join(
        f"{a.name} ({a.summary})" for a in ADAPTERS.values()), choices=MODEL_CHOICES,
        configure=True, option="--model")
    weights: str = setting("", "checkpoint of the model; empty: the model's file in the cache ("
                           + ", ".join(a.weights_name for a in ADAPTERS.values())
                           + "; `hybridnets download-weights --model M` fetches those of "
                           + ", ".join(a.name for a in ADAPTERS.values() if a.downloadable)
                           + ")", configure=True, option="--weights", metavar="PATH")
    allow_random_weights: bool = setting(False, "without a checkpoint, run with random "
                                         "weights (meaningless outputs, for pipeline checks) "
                                         "instead of failing", configure=True,
                                         option="--random-weights")
    backend: str = setting("auto", "inference engine; auto: the best one available (logged)",
                           choices=BACKEND_CHOICES, configure=True, option="--backend")
    device: str = setting("auto", "cpu, cuda or cuda:N; auto picks cuda when available",
                          configure=True, option="--device")
    precision: str = setting("fp32", "fp32, fp16 (CUDA), bf16 (openvino, CPUs with "
                             "AVX512-BF16/AMX) or int8 (onnxruntime/openvino/tensorrt, "
                             "calibrated)", choices=PRECISIONS, configure=True,
                             option="--precision")
    int8_calibration: str = setting("", "folder of frames like the camera's, to calibrate "
                                    "precision int8 (cached afterwards; 6-32 are enough)",
                                    configure=True, option="--calib", metavar="DIR")
    camera_resolution: tuple[int, ...] = setting(
        (1280, 720), "[width, height] of the camera: the engine for it is built when the node "
        "is configured, not at the first frame (empty: at the first frame)", configure=True)
    max_engines: int = setting(ENGINES_KEPT, "static-shape engines kept in memory, one per "
                               "network input size and batch (least recently used dropped "
                               "first; docs/benchmarks.md: what one costs per backend)",
                               configure=True, range_=(1, 64))
    input_size: int = setting(640, "letterbox target size (longer image side at the "
                              "network input)", range_=(128, 2048), step=32, configure=True,
                              option="--size", metavar="N")
    conf_threshold: float = setting(DetectionSettings.conf_threshold, "detection score "
                                    "threshold", runtime=True, range_=(0.0, 1.0), option="--conf",
                                    metavar="S")
    iou_threshold: float = setting(DetectionSettings.iou_threshold, "NMS IoU threshold",
                                   runtime=True, range_=(0.0, 1.0), option="--iou",
                                   metavar="T")
    drivable_classes: tuple[str, ...] = setting(
        (), "networks with class-based grids: classes free in drivable/grid (empty: the "
        "model's default, road)", runtime=True)
    obstacle_classes: tuple[str, ...] = setting(
        (), "networks with class-based grids: classes occupied in drivable/grid (empty: the "
        "model's default, docs/models.md)", runtime=True)
    obstacle_height: float = setting(0.3, "networks with depth: depth points higher than this "
                                     "above the ground (m) are obstacles; drivable-class "
                                     "points within this of the ground are free",
                                     runtime=True, range_=(0.02, 5.0))
    points_decimation: int = setting(4, "networks with depth: every n-th pixel in both "
                                     "directions goes into the points cloud", runtime=True,
                                     range_=(1, 64))
    max_detections: int = setting(DetectionSettings.max_detections, "most detections per "
                                  "frame, highest scores first; NMS sees only the best-scoring "
                                  "candidates (30 per detection), so a low conf_threshold "
                                  "cannot stall a frame", runtime=True, range_=(1, 10_000),
                                  option="--max-detections", metavar="N")
    max_image_pixels: int = setting(MAX_IMAGE_PIXELS, "largest image (width x height) "
                                    "processed; larger ones are refused, compressed ones from "
                                    "their header before decoding", runtime=True,
                                    range_=(32 * 32, 2**30))
    ground_frame: str = setting("base_footprint", "frame of the grids and 3D detections; its "
                                "z = 0 is the road (REP-105's base_footprint, not base_link)")
    camera_pose: tuple[float, ...] = setting(
        (0.0, 0.0, 1.5, 0.0, 0.0, 0.0), "[x, y, z, roll, pitch, yaw] of the camera body frame "
        "(x forward, y left, z up) in ground_frame, metres and radians, positive pitch looks "
        "down; empty: look it up with TF (if tf2_ros is available)", runtime=True)
    rectified: bool = setting(False, "input images are rectified: use CameraInfo P and no "
                              "distortion instead of K and D", runtime=True)
    grid_resolution: float = setting(0.10, "occupancy grid cell size in metres", runtime=True,
                                     range_=(0.01, 5.0))
    grid_x_range: tuple[float, ...] = setting((0.0, 40.0), "[min, max] forward extent of the "
                                              "grids in metres", runtime=True)
    grid_y_range: tuple[float, ...] = setting((-10.0, 10.0), "[min, max] lateral extent (left "
                                              "positive) in metres", runtime=True)
    publish_points: bool = setting(False, "also publish drivable/points and lane/points "
                                   "(PointCloud2 of lane cells and the non-drivable boundary)",
                                   runtime=True)
    points_z: float = setting(0.5, "height in metres of the drivable/points and lane/points "
                              "points in ground_frame: inside a Nav2 obstacle layer's "
                              "min/max_obstacle_height band (config/nav2_costmap.yaml)",
                              runtime=True, range_=(-10.0, 10.0))
    max_range: float = setting(80.0, "detections_3d: farthest ground-contact point (horizontal "
                               "distance from the camera, metres) that gives a 3D detection; "
                               "segmentation/points: farthest point (NaN beyond)",
                               runtime=True, range_=(1.0, 1000.0))
    semantic_output_scale: float = setting(
        1.0, "size of segmentation/label, /confidence and /points relative to the image (Nav2's "
        "semantic segmentation layer: about 400x200, 0.3125 of 1280x720); they stay "
        "pixel-aligned", runtime=True, range_=(0.01, 1.0))
    road_max_range: float = setting(40.0, "road_geometry, lanes, drivable/scan: farthest "
                                    "forward distance (metres) of the lane lines and drivable "
                                    "edges", runtime=True, range_=(5.0, 200.0))
    odom_frame: str = setting("", "road_geometry, lanes: a fixed frame (e.g. odom) whose TF to "
                              "ground_frame gives the vehicle's motion between images, for "
                              "tracking the lane lines; empty: none (they move as the filter "
                              "predicts)", runtime=True)
    tracking: bool = setting(True, "give detections track ids (Detection2D/Detection3D id) "
                             "that stay the same for the same object across frames",
                             runtime=True)
    track_max_missed: int = setting(5, "frames a track survives without a matching detection "
                                    "before it ends", runtime=True, range_=(0, 1000))
    track_min_iou: float = setting(0.1, "least overlap (IoU) of a track's predicted box with a "
                                   "detection for them to match", runtime=True,
                                   range_=(0.0, 1.0))
    track_max_distance: float = setting(3.0, "farthest ground distance (metres) between a "
                                        "track's predicted position and a detection for them "
                                        "to match (with CameraInfo and pose)", runtime=True,
                                        range_=(0.01, 100.0))
    use_compressed: bool = setting(False, "subscribe to image/compressed (jpeg/png) instead "
                                   "of image", configure=True)
    reliable_qos: bool = setting(False, "subscribe with reliable QoS instead of the "
                                 "sensor-data profile (best effort, keep last 1)", configure=True)
    camera_info_sync: str = setting(
        "latest", "latest: each image with the newest CameraInfo; exact: each image with the "
        "CameraInfo of its stamp, as image_transport's CameraSubscriber (images without one are "
        "not processed); replay takes a bag's CameraInfo in its order either way",
        choices=("latest", "exact"), configure=True)
    autostart: bool = setting(True, "configure and activate the lifecycle node by itself")
    diagnostics_period: float = setting(1.0, "seconds between /diagnostics messages",
                                        range_=(0.1, 60.0))
    diagnostics_window: float = setting(RECENT_S, "seconds over which /diagnostics judges "
                                        "rejected messages, failed frames and frame times: "
                                        "a WARN for them ends this long after they do",
                                        range_=(1.0, 600.0))
    # Several cameras served by one node and one model (docs/multi_camera.md).
    cameras: tuple[str, ...] = setting(
        (), "camera names: each subscribes <name>/image (or <name>/image/compressed) and "
        "<name>/camera_info and publishes its outputs under <name>/, all through one model; "
        "empty: one camera on image and camera_info")
    camera_poses: tuple[float, ...] = setting(
        (), "6 numbers per camera of cameras, in its order, each as camera_pose; empty: TF "
        "from ground_frame to each image's frame id", runtime=True)
    fused_x_range: tuple[float, ...] = setting((-30.0, 30.0), "[min, max] forward extent of "
                                               "the fused surround grids in metres")
    fused_y_range: tuple[float, ...] = setting((-30.0, 30.0), "[min, max] lateral extent of "
                                               "the fused surround grids in metres")
    fused_rate: float = setting(10.0, "Hz of fused/drivable/grid and fused/lane/grid "
                                "(published only while subscribed)", range_=(0.1, 100.0))

    # ------------------------------------------------------------------ building
    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], base=None, source: str = ""):
        """``base`` (default: the defaults) with ``values`` applied. Raises ConfigError naming
        every bad value and unknown name, prefixed by ``source`` (e.g. a file name)."""
        base = base or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        errors, changes = [], {}
        for name, value in values.items():
            if name not in names:
                errors.append(f"unknown setting {name!r}")
                continue
            try:
                changes[name] = _coerce(name, value, getattr(base, name))
            except ValueError as exc:
                errors.append(str(exc))
        config = dataclasses.replace(base, **changes)
        errors += problems(config)
        if errors:
            raise ConfigError((f"{source}: " if source else "") + "; ".join(errors))
        return config

    @classmethod
    def from_params_file(cls, path: str | Path, node_name: str = "hybridnets_node"):
        """The defaults overlaid with a ROS parameter file's values for ``node_name`` (the
        ``/**`` wildcard or any key ending in the node name); raises ConfigError."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read parameter file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a ROS parameter file (no mapping at the top)")
        values: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        for key, section in data.items():
            if (key == "/**" or str(key).rstrip("/").endswith(node_name)) and isinstance(section, dict):
                params = section.get("ros__parameters") or {}
                values.update({k: v for k, v in params.items() if k in known})
        return cls.from_mapping(values, source=str(path))

    def with_changes(self, **changes):
        return type(self).from_mapping(changes, base=self)

    # ------------------------------------------------------------------- derived
    @property
    def grid(self) -> GridSpec:
        return GridSpec(self.grid_resolution, *self.grid_x_range, *self.grid_y_range)

    @property
    def adapter(self) -> ModelAdapter:
        """The model adapter (core.registry) of ``model``."""
        return ADAPTERS[self.model]

    def network_options(self) -> dict:
        """The values of the settings the network adds (its build and pre-processing)."""
        return self.adapter.options(self)

    @property
    def fused_grid(self) -> GridSpec:
        """The surround grid of the fused outputs (several cameras)."""
        return GridSpec(self.grid_resolution, *self.fused_x_range, *self.fused_y_range)

    def camera_config(self, index: int):
        """This configuration as camera ``index`` of ``cameras`` sees it: its camera_poses
        entry as camera_pose, or no pose (TF) when camera_poses is empty."""
        pose = self.camera_poses[6 * index:6 * index + 6]
        return dataclasses.replace(self, camera_pose=pose)

    @property
    def source_hw(self) -> tuple[int, int] | None:
        """The camera resolution as (height, width), or None when not set."""
        return (self.camera_resolution[1], self.camera_resolution[0]) if self.camera_resolution else None


@dataclass(frozen=True)
class NodeConfig(ModelSettings, CommonSettings):
    """Every setting of hybridnets_node: the common ones (CommonSettings), then those the
    networks add (ModelSettings, declared in their folders)."""


def settings() -> tuple[dataclasses.Field, ...]:
    """The parameter table: every setting with its default and metadata."""
    return dataclasses.fields(NodeConfig)


# Each setting's declared type: ``tuple[str, ...]`` for a list of strings.
FIELD_TYPES = field_types(NodeConfig)


def _coerce(name: str, value: Any, current: Any) -> Any:
    """``value`` as the setting's type (int for a float is fine; a YAML string like
    '1.0e308' is a number), or ValueError naming the setting."""
    item = item_type(FIELD_TYPES[name])
    def number(v, kind):
        if isinstance(v, bool):
            raise ValueError
        if kind is int:
            if isinstance(v, float) and not v.is_integer():
                raise ValueError
            return int(v)
        return float(v)

    try:
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise ValueError
            return value
        if isinstance(current, (int, float)):
            return number(value, type(current))
        if isinstance(current, str):
            if not isinstance(value, str):
                raise ValueError
            return value
        if isinstance(current, tuple):
            if value is None:
                return ()
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise ValueError
            if item is str:
                if not all(isinstance(v, str) for v in value):
                    raise ValueError
                return tuple(value)
            return tuple(number(v, item) for v in value)
    except (TypeError, ValueError, OverflowError):
        kind = (type(current).__name__ if not isinstance(current, tuple) else
                "list of strings" if item is str else "list of numbers")
        raise ValueError(f"{name} must be a {kind}, got {value!r}") from None
    raise ValueError(f"{name}: unsupported value {value!r}")


def problems(config) -> list[str]:
    """Every reason ``config`` is unacceptable (empty: it is fine). The one validation."""
    errors = []
    for f in dataclasses.fields(NodeConfig):
        value, meta = getattr(config, f.name), f.metadata
        if meta["choices"] and value not in meta["choices"]:
            errors.append(f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}")
        if meta["range"] is not None:
            low, high = meta["range"]
            if not (math.isfinite(value) and low <= value <= high):
                errors.append(f"{f.name} must be within [{low}, {high}], got {value!r}")
            elif meta["step"] and (value - low) % meta["step"]:
                errors.append(f"{f.name} must be {low} plus a multiple of {meta['step']}, "
                              f"got {value!r}")
    if config.camera_resolution and (len(config.camera_resolution) != 2
                                     or min(config.camera_resolution) < 1):
        errors.append(f"camera_resolution needs [width, height] > 0 or [], got "
                      f"{list(config.camera_resolution)}")
    pose = config.camera_pose
    if pose and (len(pose) != 6 or not all(math.isfinite(v) for v in pose)):
        errors.append(f"camera_pose needs 6 finite numbers [x, y, z, roll, pitch, yaw] or [], "
                      f"got {list(pose)}")
    elif pose and (problem := impossible_pose(pose)):
        errors.append(f"camera_pose {list(pose)}: {problem}")
    if not config.ground_frame.strip():
        errors.append("ground_frame must not be empty")
    if config.device != "auto" and not (config.device == "cpu" or config.device == "cuda"
                                        or (config.device.startswith("cuda:")
                                            and config.device[5:].isdigit())):
        errors.append(f"device must be auto, cpu, cuda or cuda:N, got {config.device!r}")
    errors += grid_problems(config)
    errors += model_problems(config)
    errors += camera_problems(config)
    return errors


def model_problems(config) -> list[str]:
    """Class lists that name classes the model does not have; what the model's adapter
    finds wrong with its own settings."""
    adapter = ADAPTERS.get(config.model)
    if adapter is None:
        return []
    errors = []
    for name in CLASS_LISTS:
        unknown = [c for c in getattr(config, name) if c not in adapter.seg_classes]
        if unknown:
            errors.append(f"{name}: {config.model} has no class {', '.join(map(repr, unknown))} "
                          f"(its classes: {', '.join(adapter.seg_classes)})")
    return errors + adapter.setting_problems(config)


def camera_problems(config) -> list[str]:
    """The several-cameras settings: names, poses and the fused grid."""
    errors = []
    names = config.cameras
    bad = [n for n in names if not CAMERA_NAME.fullmatch(n)]
    if bad:
        errors.append(f"cameras must be ROS names (letters, digits, '_', '/'-separated, not "
                      f"starting with a digit), got {', '.join(map(repr, bad))}")
    if len(set(names)) != len(names):
        errors.append(f"cameras must be unique, got {list(names)}")
    poses = config.camera_poses
    if poses and (len(poses) != 6 * len(names) or not all(math.isfinite(v) for v in poses)):
        errors.append(f"camera_poses needs 6 finite numbers per camera ({6 * len(names)} for "
                      f"cameras {list(names)}) or [], got {len(poses)} values")
    elif poses:
        for index, name in enumerate(names):
            pose = poses[6 * index:6 * index + 6]
            if problem := impossible_pose(pose):
                errors.append(f"camera_poses of camera {name} {list(pose)}: {problem}")
    if len(names) > 1 and config.max_engines < 2:
        errors.append(f"max_engines must be at least 2 with several cameras (the engines of "
                      f"batch 1 and batch {len(names)}), got {config.max_engines}")
    return errors + extent_problems(config, "the fused grid", "fused_x_range", "fused_y_range",
                                    count_cells=bool(names) and not errors)


def impossible_pose(pose) -> str | None:
    """Why a camera cannot be at ``pose`` [x, y, z, roll, pitch, yaw] over the ground (the
    part that needs no lens: the camera model checks the rest per CameraInfo)."""
    return pose_problem(*optical_transform(pose))


def grid_problems(config) -> list[str]:
    return extent_problems(config, "the grid", "grid_x_range", "grid_y_range")


def extent_problems(config, label: str, x_name: str, y_name: str,
                    count_cells: bool = True) -> list[str]:
    """The [min, max] ranges ``x_name``, ``y_name`` and (``count_cells``) the cell count of
    the grid they make at grid_resolution (``label`` names it)."""
    errors = []
    for name in (x_name, y_name):
        values = getattr(config, name)
        if (len(values) != 2 or not all(math.isfinite(v) for v in values)
                or not math.isfinite(values[1] - values[0]) or values[1] <= values[0]):
            errors.append(f"{name} needs [min, max] with finite max > min, got {list(values)}")
    if (errors or not count_cells or not math.isfinite(config.grid_resolution)
            or config.grid_resolution <= 0):
        return errors
    grid = GridSpec(config.grid_resolution, *getattr(config, x_name), *getattr(config, y_name))
    cells = grid.width * grid.height
    if cells > MAX_GRID_CELLS:
        errors.append(f"{label} would have {grid.width}x{grid.height} = {cells:,} cells "
                      f"({x_name}, {y_name} at grid_resolution {config.grid_resolution} m); at "
                      f"most {MAX_GRID_CELLS:,} are allowed")
    elif cells < 1:
        errors.append(f"{label} would have no cells: grid_resolution is larger than its extent")
    return errors
