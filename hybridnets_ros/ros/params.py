"""Every parameter of hybridnets_node: name, default, description, range, validation.

Parameters marked ``runtime`` may change while the node runs (validated, a bad value is
refused with the reason); the others are read-only after start-up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt", "torch2trt")


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    runtime: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int, int] | None = None  # (from, to, step)
    type_: Parameter.Type | None = None  # for empty-array defaults


PARAMS = (
    Param("weights", "", "HybridNets checkpoint (.pth); empty: the one `hybridnets "
          "download-weights` saved in the cache"),
    Param("allow_random_weights", False, "without a checkpoint, run with random weights "
          "(meaningless outputs, for pipeline checks) instead of failing"),
    Param("backend", "auto", f"inference engine: {', '.join(BACKENDS)}"),
    Param("device", "auto", "cpu, cuda or cuda:N; auto picks cuda when available"),
    Param("precision", "fp32", "fp32, fp16 (CUDA) or int8 (onnxruntime/tensorrt, calibrated)"),
    Param("int8_calibration", "", "folder of frames like the camera's, to calibrate "
          "precision int8 (cached afterwards)"),
    Param("camera_resolution", [], "[width, height] of the camera: the engine for it is built "
          "when the node is configured, not at the first frame (empty: at the first frame)",
          type_=Parameter.Type.INTEGER_ARRAY),
    Param("input_size", 640, "letterbox target size (longer image side at the network input)",
          int_range=(128, 2048, 32)),
    Param("conf_threshold", 0.25, "detection score threshold", runtime=True,
          float_range=(0.0, 1.0)),
    Param("iou_threshold", 0.3, "NMS IoU threshold", runtime=True, float_range=(0.0, 1.0)),
    Param("ground_frame", "base_link", "frame of the occupancy grids (z up, on the ground)"),
    Param("camera_pose", [], "[x, y, z, roll, pitch, yaw] of the camera body frame "
          "(x forward, y left, z up) in ground_frame, metres and radians, positive pitch "
          "looks down; empty: look it up with TF (if tf2_ros is available)", runtime=True,
          type_=Parameter.Type.DOUBLE_ARRAY),
    Param("rectified", False, "input images are rectified: use CameraInfo P and no "
          "distortion instead of K and D", runtime=True),
    Param("grid_resolution", 0.10, "occupancy grid cell size in metres", runtime=True,
          float_range=(0.01, 5.0)),
    Param("grid_x_range", [0.0, 40.0], "[min, max] forward extent of the grids in metres",
          runtime=True),
    Param("grid_y_range", [-10.0, 10.0], "[min, max] lateral extent (left positive) in metres",
          runtime=True),
    Param("publish_points", False, "also publish drivable/points and lane/points "
          "(PointCloud2 of lane cells and the non-drivable boundary)", runtime=True),
    Param("use_compressed", False, "subscribe to image/compressed (jpeg/png) instead of image"),
    Param("reliable_qos", False, "subscribe with reliable QoS instead of the sensor-data "
          "profile (best effort, keep last 1)"),
    Param("autostart", True, "configure and activate the lifecycle node by itself"),
    Param("diagnostics_period", 1.0, "seconds between /diagnostics messages",
          float_range=(0.1, 60.0)),
)
BY_NAME = {p.name: p for p in PARAMS}


def descriptor(p: Param) -> ParameterDescriptor:
    d = ParameterDescriptor(name=p.name, description=p.description, read_only=not p.runtime)
    if p.float_range:
        d.floating_point_range = [FloatingPointRange(from_value=p.float_range[0],
                                                     to_value=p.float_range[1], step=0.0)]
    if p.int_range:
        d.integer_range = [IntegerRange(from_value=p.int_range[0], to_value=p.int_range[1],
                                        step=p.int_range[2])]
    return d


def declare_all(node) -> None:
    for p in PARAMS:
        if p.type_ is not None and not p.default:
            node.declare_parameter(p.name, p.type_, descriptor(p))
        else:
            node.declare_parameter(p.name, p.default, descriptor(p))


def validate(name: str, value: Any) -> str | None:
    """The reason a value is refused, or None. (Ranges are also enforced by rclpy.)"""
    if name in ("conf_threshold", "iou_threshold"):
        if not (isinstance(value, float) and 0.0 <= value <= 1.0):
            return f"{name} must be a number within [0, 1], got {value!r}"
    elif name == "camera_pose":
        values = list(value or [])
        if values and (len(values) != 6 or not all(math.isfinite(v) for v in values)):
            return f"camera_pose needs 6 finite numbers [x, y, z, roll, pitch, yaw], got {values}"
    elif name in ("grid_x_range", "grid_y_range"):
        values = list(value or [])
        if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[1] <= values[0]:
            return f"{name} needs [min, max] with max > min, got {values}"
    elif name == "grid_resolution":
        if not (isinstance(value, float) and value > 0):
            return f"grid_resolution must be > 0, got {value!r}"
    elif name == "camera_resolution":
        values = list(value or [])
        if values and (len(values) != 2 or min(values) < 1):
            return f"camera_resolution needs [width, height] > 0, got {values}"
    elif name == "backend" and value not in BACKENDS:
        return f"backend must be one of {', '.join(BACKENDS)}, got {value!r}"
    elif name == "precision" and value not in ("fp32", "fp16", "int8"):
        return f"precision must be fp32, fp16 or int8, got {value!r}"
    return None


def read_params_file(path) -> dict[str, Any]:
    """Defaults overlaid with a ROS parameter file's values for hybridnets_node (the
    ``/**`` wildcard or any key ending in ``hybridnets_node``); raises ValueError."""
    from pathlib import Path

    import yaml

    values = {p.name: p.default for p in PARAMS}
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read parameter file {path}: {exc}") from None
    for key, section in data.items():
        if (key == "/**" or str(key).rstrip("/").endswith("hybridnets_node")) and isinstance(section, dict):
            for name, value in (section.get("ros__parameters") or {}).items():
                if name in values:
                    if isinstance(values[name], float) and isinstance(value, int):
                        value = float(value)
                    reason = validate(name, value)
                    if reason:
                        raise ValueError(f"{path}: {reason}")
                    values[name] = value
    return values
