"""A node that records hybridnets_node's outputs: overlays, grids, latencies."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile

from ..core.visualize import bev_image
from ..ros.messages import message_stamp_ns
from ..ros.outputs import OUTPUT_QOS, OUTPUTS

# Reliable like the node's outputs, with room for every output of a few frames.
RECORDER_QOS = QoSProfile(reliability=OUTPUT_QOS.reliability, history=OUTPUT_QOS.history, depth=20)


class OutputRecorder(Node):
    """Keeps what arrives per input stamp and writes pictures of it to ``folder``."""

    # every output the node publishes without an opt-in setting
    TOPICS = {o.topic: o.msg_type for o in OUTPUTS if o.enabled_by is None and o.per_frame}

    def __init__(self, folder: Path, name: str = "hybridnets_recorder"):
        super().__init__(name)
        self.folder = folder
        self.lock = threading.Lock()
        self.outputs: dict[int, dict[str, object]] = {}
        self.arrival: dict[int, float] = {}  # stamp -> monotonic time detections arrived
        self.diagnostics: DiagnosticArray | None = None
        for topic, msg_type in self.TOPICS.items():
            self.create_subscription(msg_type, topic, self._callback(topic), RECORDER_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _callback(self, topic: str):
        def store(msg):
            stamp = message_stamp_ns(msg)
            if stamp is None:  # an empty MarkerArray: nothing to keep
                return
            with self.lock:
                self.outputs.setdefault(stamp, {})[topic] = msg
                if topic == "detections":
                    self.arrival[stamp] = time.monotonic()
        return store

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        if any(s.name.endswith("hybridnets_node: perception") for s in msg.status):
            self.diagnostics = msg

    def write(self, stamp: int, index: int) -> list[str]:
        """Files for one input frame; returns their names."""
        with self.lock:
            got = dict(self.outputs.get(stamp, {}))
        written = []
        overlay = got.get("overlay")
        if overlay is not None:
            pixels = np.frombuffer(overlay.data, np.uint8).reshape(overlay.height, overlay.width, 3)
            cv2.imwrite(str(self.folder / f"overlay_{index:03d}.jpg"), pixels)
            written.append(f"overlay_{index:03d}.jpg")
        drivable, lane = got.get("drivable/grid"), got.get("lane/grid")
        if drivable is not None and lane is not None:
            shape = (drivable.info.height, drivable.info.width)
            d = np.frombuffer(drivable.data, np.int8).reshape(shape)
            l = np.frombuffer(lane.data, np.int8).reshape(shape)
            cv2.imwrite(str(self.folder / f"grids_{index:03d}.png"), bev_image(d, l))
            written.append(f"grids_{index:03d}.png")
        return written
