"""CameraInfo from a CameraModel or a camera_calibration_parsers YAML file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml
from sensor_msgs.msg import CameraInfo

from ..core.camera import CameraModel


def camera_info_from_model(camera: CameraModel, frame_id: str) -> CameraInfo:
    info = CameraInfo(width=camera.width, height=camera.height,
                      distortion_model=camera.distortion_model)
    info.header.frame_id = frame_id
    info.k = camera.K.ravel().tolist()
    info.d = (camera.D.tolist() if camera.D is not None else [0.0] * 5)
    info.r = np.eye(3).ravel().tolist()
    info.p = np.hstack([camera.K, np.zeros((3, 1))]).ravel().tolist()
    return info


def camera_info_from_yaml(path: str | Path, frame_id: str) -> CameraInfo:
    """Read the standard calibration YAML (image_width, camera_matrix, distortion_*, ...);
    without distortion_model it is plumb_bob, as camera_calibration_parsers assumes."""
    try:
        data = yaml.safe_load(Path(path).read_text())
        info = CameraInfo(width=int(data["image_width"]), height=int(data["image_height"]),
                          distortion_model=str(data.get("distortion_model", "plumb_bob")))
        info.k = [float(v) for v in data["camera_matrix"]["data"]]
        info.d = [float(v) for v in data.get("distortion_coefficients", {}).get("data", [])]
        info.r = [float(v) for v in data.get("rectification_matrix", {}).get(
            "data", np.eye(3).ravel().tolist())]
        p = data.get("projection_matrix", {}).get("data")
        info.p = ([float(v) for v in p] if p else
                  np.hstack([np.reshape(info.k, (3, 3)), np.zeros((3, 1))]).ravel().tolist())
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a camera calibration YAML ({type(exc).__name__}: {exc})") from None
    if len(info.k) != 9:
        raise ValueError(f"{path}: camera_matrix needs 9 values, got {len(info.k)}")
    info.header.frame_id = frame_id
    return info
