"""`hybridnets make-bag`: images or a video (+ calibration) -> a ROS 2 bag to replay."""
from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from ..core.camera import optical_transform
from ..ros import messages
from .bags import BagWriter
from .static_tf import StaticTransforms, write_static_transforms

IMAGE_TOPIC = "/camera/image_raw"  # the one camera of make-bag
FRAME_ID = "camera_optical_frame"
# Frame rates make-bag writes: beyond these the stamps leave what a ROS time can hold for a
# long sequence (or the rate is a typo).
RATE_RANGE_HZ = (0.01, 1000.0)
# Offered by `ros2 bag play`: reliable, so that reliable (RViz) and best-effort (the node's
# sensor-data profile) subscribers both connect.
INPUT_QOS = QoSProfile(depth=10)


@dataclass
class CameraStream:
    """One camera of a bag to write: its frames, calibration and pose."""

    frames: Iterable[np.ndarray]
    camera_info: CameraInfo | None = None
    pose: tuple[float, ...] | None = None   # camera body frame in ground_frame -> /tf_static
    namespace: str = "/camera"   # topics <namespace>/image_raw (IMAGE_TOPIC), <namespace>/camera_info
    frame_id: str = FRAME_ID


def make_bag(frames: Iterable[np.ndarray], out: Path, rate_hz: float,
             camera_info: CameraInfo | None = None, compressed: bool = False,
             storage: str = "mcap", start_ns: int | None = None, progress=None,
             camera_pose=None, ground_frame: str = "base_footprint",
             chunk_size: int | None = None) -> int:
    """Writes the frames at ``rate_hz`` (header stamp = bag time); returns their number.
    With ``camera_pose`` (x, y, z, roll, pitch, yaw of the camera body frame) /tf_static
    holds the optical frame's pose in ``ground_frame``; ``chunk_size``: BagWriter's.

    Raises ValueError for a rate outside RATE_RANGE_HZ or a frame of another size than
    ``camera_info``; on any failure the partly written bag is removed (a re-run may reuse
    the name)."""
    return make_camera_bag([CameraStream(frames, camera_info, camera_pose)], out, rate_hz,
                           compressed, storage, start_ns, progress, ground_frame, chunk_size)


def make_camera_bag(cameras: list[CameraStream], out: Path, rate_hz: float,
                    compressed: bool = False, storage: str = "mcap", start_ns: int | None = None,
                    progress=None, ground_frame: str = "base_footprint",
                    chunk_size: int | None = None) -> int:
    """A bag of several cameras (make_bag's one camera is the simplest case): frame i of
    every camera at time i / ``rate_hz``, until the shortest camera ends; returns the
    number of frame times."""
    low, high = RATE_RANGE_HZ
    if not (math.isfinite(rate_hz) and low <= rate_hz <= high):
        raise ValueError(f"the rate must be within [{low:g}, {high:g}] frames per second, "
                         f"got {rate_hz!r}")
    start_ns = time.time_ns() if start_ns is None else start_ns
    count = 0
    # BagWriter refuses an existing path: only a new one is removed below
    bag = BagWriter(out, storage, chunk_size)
    try:
        with bag:
            poses = StaticTransforms()
            for camera in cameras:
                if camera.pose is not None:
                    poses.set(ground_frame, camera.frame_id, *optical_transform(camera.pose))
            if poses:
                write_static_transforms(bag, poses, start_ns, divmod(start_ns, 10**9))
            for index, bgrs in enumerate(zip(*(camera.frames for camera in cameras))):
                stamp_ns = start_ns + round(index * 1e9 / rate_hz)
                for camera, bgr in zip(cameras, bgrs):
                    _write_frame(bag, index, bgr, stamp_ns, camera, compressed)
                count += 1
                if progress:
                    progress(1)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return count


def _write_frame(bag: BagWriter, index: int, bgr: np.ndarray, stamp_ns: int,
                 camera: CameraStream, compressed: bool) -> None:
    header = Header(frame_id=camera.frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
    camera_info, image_topic = camera.camera_info, camera.namespace + "/image_raw"
    if camera_info is not None:
        if (camera_info.height, camera_info.width) != bgr.shape[:2]:
            raise ValueError(f"frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, the camera "
                             f"info {camera_info.width}x{camera_info.height}")
        camera_info.header = header
        bag.write(camera.namespace + "/camera_info", camera_info, stamp_ns, INPUT_QOS)
    if compressed:
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        msg = CompressedImage(header=header, format="jpeg")
        msg.data = jpeg.tobytes()
        bag.write(image_topic + "/compressed", msg, stamp_ns, INPUT_QOS)
    else:
        bag.write(image_topic, messages.image(header, bgr, "bgr8"), stamp_ns, INPUT_QOS)
