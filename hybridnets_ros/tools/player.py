"""A node that publishes frames (with a CameraInfo when one is known) at a fixed rate."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from std_msgs.msg import Header

from ..ros import messages


@dataclass
class PublishedFrame:
    index: int
    stamp_ns: int
    wall_time: float  # time.monotonic() when published


class FramePlayer(Node):
    """Publishes ``image`` (bgr8) and ``camera_info`` with the same header."""

    def __init__(self, frame_id: str = "camera_optical_frame", camera_info: CameraInfo | None = None,
                 name: str = "hybridnets_player"):
        super().__init__(name)
        self.frame_id = frame_id
        self.camera_info = camera_info
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.published: list[PublishedFrame] = []

    def publish(self, index: int, bgr: np.ndarray, record: bool = True) -> PublishedFrame:
        return self.publish_message(index, messages.image(Header(), bgr, "bgr8"), record)

    def publish_message(self, index: int, image: Image, record: bool = True) -> PublishedFrame:
        """Publishes a prepared image (bench --graph preloads them), its header replaced:
        this player's frame id, stamped now."""
        header = Header(frame_id=self.frame_id, stamp=self.get_clock().now().to_msg())
        if self.camera_info is not None:
            self.camera_info.header = header
            self.info_pub.publish(self.camera_info)
        image.header = header
        self.image_pub.publish(image)
        frame = PublishedFrame(index, messages.stamp_ns(header), time.monotonic())
        if record:
            self.published.append(frame)
        return frame

