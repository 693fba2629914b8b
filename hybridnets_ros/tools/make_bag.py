"""`hybridnets make-bag`: images or a video (+ calibration) -> a ROS 2 bag to replay."""
from __future__ import annotations

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
# Offered by `ros2 bag play`: reliable, so that reliable (RViz) and best-effort (the node's
# sensor-data profile) subscribers both connect.
INPUT_QOS = QoSProfile(depth=10)


def make_bag(frames: Iterable[np.ndarray], out: Path, rate_hz: float,
             camera_info: CameraInfo | None = None, compressed: bool = False,
             storage: str = "mcap", start_ns: int | None = None, progress=None) -> int:
    """Writes the frames at ``rate_hz`` (header stamp = bag time); returns their number."""
    start_ns = time.time_ns() if start_ns is None else start_ns
    count = 0
    with BagWriter(out, storage) as bag:
        for index, bgr in enumerate(frames):
            stamp_ns = start_ns + round(index * 1e9 / rate_hz)
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
            count += 1
            if progress:
                progress(1)
    return count
