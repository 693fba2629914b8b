"""A bag's ``/tf_static``: camera poses read from it, and written into the bags we write.

Reading: the static transforms of a bag form a tree (child -> parent); a camera's pose is
the chain from its image's frame up to the ground frame, composed. Writing: one latched
``tf2_msgs/TFMessage`` holding every transform, as tf2_ros' static broadcaster sends it
(a transient-local topic with depth 1 keeps only the newest message, so the transforms of
several cameras must travel together), so that Foxglove and RViz relate each
``camera_optical_frame`` to the ground frame.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy

from ..core.camera import quaternion_from_rotation, rotation_from_quaternion
from .bags import typestore

TF_STATIC_TOPIC = "/tf_static"
TF_MESSAGE_TYPE = "tf2_msgs/msg/TFMessage"
# What tf2_ros' StaticTransformBroadcaster offers (and `ros2 bag record` records).
TF_STATIC_QOS = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                           history=QoSHistoryPolicy.KEEP_LAST, depth=1,
                           durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class StaticTransforms:
    """child frame -> (parent frame, R_parent_child, t_parent_child)."""

    parents: dict[str, tuple[str, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def add_message(self, msg) -> None:
        """The transforms of one TFMessage (a rosbags object); a later one replaces an
        earlier one of the same child, as tf2 does."""
        for tf in msg.transforms:
            q, t = tf.transform.rotation, tf.transform.translation
            self.parents[tf.child_frame_id.lstrip("/")] = (
                tf.header.frame_id.lstrip("/"), rotation_from_quaternion(q.x, q.y, q.z, q.w),
                np.array([t.x, t.y, t.z], np.float64))

    def set(self, parent: str, child: str, R: np.ndarray, t: np.ndarray) -> None:
        self.parents[child] = (parent, np.asarray(R, np.float64), np.asarray(t, np.float64))

    def lookup(self, target: str, source: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(R, t) of ``source`` in ``target`` through the tree, None when not connected."""
        target, frame = target.lstrip("/"), source.lstrip("/")
        R, t = np.eye(3), np.zeros(3)
        for _ in range(len(self.parents) + 1):  # a longer walk is a loop
            if frame == target:
                return R, t
            if frame not in self.parents:
                return None
            frame, R_parent, t_parent = self.parents[frame]
            R, t = R_parent @ R, R_parent @ t + t_parent
        return None

    def __bool__(self) -> bool:
        return bool(self.parents)


def read_static_transforms(reader) -> StaticTransforms:
    """Every /tf_static transform of a bag (a tools.bags.BagReader); empty without one."""
    found = StaticTransforms()
    if any(t.name == TF_STATIC_TOPIC and t.msgtype == TF_MESSAGE_TYPE for t in reader.topics()):
        for _, _, _, msg in reader.messages({TF_STATIC_TOPIC}):
            found.add_message(msg)
    return found


def write_static_transforms(bag, transforms: StaticTransforms, timestamp: int,
                            stamp: tuple[int, int]) -> None:
    """All of ``transforms`` as one latched TFMessage on /tf_static at bag time
    ``timestamp``, stamped ``stamp`` (sec, nanosec)."""
    types = typestore().types
    Time, Header = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]
    Vector3, Quaternion = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]
    Transform = types["geometry_msgs/msg/Transform"]
    TransformStamped, TFMessage = types["geometry_msgs/msg/TransformStamped"], types[TF_MESSAGE_TYPE]
    items = []
    for child, (parent, R, t) in sorted(transforms.parents.items()):
        x, y, z, w = quaternion_from_rotation(R)
        items.append(TransformStamped(
            header=Header(stamp=Time(sec=int(stamp[0]), nanosec=int(stamp[1])), frame_id=parent),
            child_frame_id=child,
            transform=Transform(translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                                rotation=Quaternion(x=x, y=y, z=z, w=w))))
    bag.write_object(TF_STATIC_TOPIC, TF_MESSAGE_TYPE, TFMessage(transforms=items), timestamp,
                     qos=TF_STATIC_QOS)
