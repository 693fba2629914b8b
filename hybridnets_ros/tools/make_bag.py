"""`hybridnets make-bag`: images or a video (+ calibration) -> a ROS 2 bag to replay."""
from __future__ import annotations

import math
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage
from std_msgs.msg import Header

from ..ros import messages
from .bags import BagWriter

IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
FRAME_ID = "camera_optical_frame"
# Frame rates make-bag writes: beyond these the stamps leave what a ROS time can hold for a
# long sequence (or the rate is a typo).
RATE_RANGE_HZ = (0.01, 1000.0)
# Offered by `ros2 bag play`: reliable, so that reliable (RViz) and best-effort (the node's
# sensor-data profile) subscribers both connect.
INPUT_QOS = QoSProfile(depth=10)


def make_bag(frames: Iterable[np.ndarray], out: Path, rate_hz: float,
             camera_info: CameraInfo | None = None, compressed: bool = False,
             storage: str = "mcap", start_ns: int | None = None, progress=None) -> int:
    """Writes the frames at ``rate_hz`` (header stamp = bag time); returns their number.

    Raises ValueError for a rate outside RATE_RANGE_HZ or a frame of another size than
    ``camera_info``; on any failure the partly written bag is removed (a re-run may reuse
    the name)."""
    low, high = RATE_RANGE_HZ
    if not (math.isfinite(rate_hz) and low <= rate_hz <= high):
        raise ValueError(f"the rate must be within [{low:g}, {high:g}] frames per second, "
                         f"got {rate_hz!r}")
    start_ns = time.time_ns() if start_ns is None else start_ns
    count = 0
    bag = BagWriter(out, storage)  # refuses an existing path: only a new one is removed below
    try:
        with bag:
            for index, bgr in enumerate(frames):
                _write_frame(bag, index, bgr, start_ns + round(index * 1e9 / rate_hz),
                             camera_info, compressed)
                count += 1
                if progress:
                    progress(1)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return count


def _write_frame(bag: BagWriter, index: int, bgr: np.ndarray, stamp_ns: int,
                 camera_info: CameraInfo | None, compressed: bool) -> None:
    header = Header(frame_id=FRAME_ID)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
    if camera_info is not None:
        if (camera_info.height, camera_info.width) != bgr.shape[:2]:
            raise ValueError(f"frame {index} is {bgr.shape[1]}x{bgr.shape[0]}, the camera "
                             f"info {camera_info.width}x{camera_info.height}")
        camera_info.header = header
        bag.write(CAMERA_INFO_TOPIC, camera_info, stamp_ns, INPUT_QOS)
    if compressed:
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        msg = CompressedImage(header=header, format="jpeg")
        msg.data = jpeg.tobytes()
        bag.write(IMAGE_TOPIC + "/compressed", msg, stamp_ns, INPUT_QOS)
    else:
        bag.write(IMAGE_TOPIC, messages.image(header, bgr, "bgr8"), stamp_ns, INPUT_QOS)
