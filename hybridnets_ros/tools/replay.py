"""`hybridnets replay`: a bag's camera images through the node's pipeline -> a new bag.

Every output message is what hybridnets_node would publish for that image (same pipeline,
same message builders), stamped with the image's header stamp and recorded at the image's
time in the input bag.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..core.visualize import bev_image
from ..ros.conversions import ImageConversionError, to_bgr
from ..ros.frame import FrameProcessor
from ..ros.outputs import BY_NAME, model_outputs
from .bags import CAMERA_INFO_TYPE, IMAGE_TYPES, BagError, BagReader, BagWriter, Topic


@dataclass
class ReplaySummary:
    frames: int = 0
    written: int = 0
    image_topic: str = ""
    camera_info_topic: str | None = None
    grids: bool = False
    rejected: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # grids skipped, damage, ...
    interrupted: bool = False


def _describe(topics: list[Topic]) -> str:
    return ", ".join(f"{t.name} ({t.msgtype})" for t in topics) or "none"


def choose_topics(topics: list[Topic], image_topic: str | None,
                  camera_info_topic: str | None) -> tuple[Topic, Topic | None]:
    by_name = {t.name: t for t in topics}
    if image_topic:
        if image_topic not in by_name or by_name[image_topic].msgtype not in IMAGE_TYPES:
            what = "has no topic" if image_topic not in by_name else "has no image topic"
            raise BagError(f"the bag {what} {image_topic}; its topics: {_describe(topics)}")
        image = by_name[image_topic]
    else:
        images = [t for t in topics if t.msgtype in IMAGE_TYPES]
        if len(images) != 1:
            raise BagError(f"{'no' if not images else 'several'} image topics in the bag: choose "
                           f"one with --image-topic; its topics: {_describe(topics)}")
        image = images[0]
    if camera_info_topic:
        if camera_info_topic not in by_name or by_name[camera_info_topic].msgtype != CAMERA_INFO_TYPE:
            raise BagError(f"the bag has no CameraInfo topic {camera_info_topic}; its topics: "
                           f"{_describe(topics)}")
        return image, by_name[camera_info_topic]
    infos = [t for t in topics if t.msgtype == CAMERA_INFO_TYPE]
    # The CameraInfo beside the image topic (/cam/image_raw[/compressed] -> /cam/camera_info).
    namespace = image.name.removesuffix("/compressed").rsplit("/", 1)[0]
    beside = [t for t in infos if t.name.rsplit("/", 1)[0] == namespace]
    if len(beside) == 1:
        return image, beside[0]
    if len(infos) > 1:
        raise BagError(f"several CameraInfo topics and none beside {image.name}: choose one with "
                       f"--camera-info-topic; its topics: {_describe(topics)}")
    return image, infos[0] if infos else None


def camera_info_of(msg) -> CameraInfo:
    """rosbags CameraInfo (ROS 2, or ROS 1 with upper-case K/D/P) -> rclpy CameraInfo."""
    info = CameraInfo(width=int(msg.width), height=int(msg.height))
    for field_name in ("k", "d", "p", "r"):
        value = getattr(msg, field_name, None)
        if value is None:
            value = getattr(msg, field_name.upper(), [])
        setattr(info, field_name, [float(v) for v in value])
    return info


def rclpy_header(header) -> Header:
    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


def replay(in_bag: Path, out_bag: Path, processor: FrameProcessor, *, image_topic=None,
           camera_info_topic=None, keep_input: bool = False, video: Path | None = None,
           storage: str = "mcap", namespace: str = "", progress_factory=None,
           say=print) -> ReplaySummary:
    """Every image of ``in_bag`` through ``processor`` (the node's frame path) into
    ``out_bag``; every enabled output is written."""
    summary = ReplaySummary()
    with BagReader(in_bag) as reader:
        topics = reader.topics()
        image, info_topic = choose_topics(topics, image_topic, camera_info_topic)
        summary.image_topic, summary.camera_info_topic = image.name, info_topic and info_topic.name
        if reader.damage:
            summary.notes.append(reader.damage)
        read = {image.name} | ({info_topic.name} if info_topic else set())
        if keep_input:
            read |= {t.name for t in topics}
        bar = progress_factory(image.count) if progress_factory else None
        with BagWriter(out_bag, storage) as bag:
            out = _Output(bag, "/" + namespace.strip("/") if namespace.strip("/") else "",
                          video, reader.rate_hz(image) or 10.0)
            try:
                for topic, msgtype, timestamp, msg in reader.messages(read):
                    if keep_input:
                        bag.write_object(topic, msgtype, msg, timestamp)
                    if info_topic and topic == info_topic.name:
                        processor.set_camera_info(camera_info_of(msg))
                    elif (topic == image.name and _replay_image(processor, msg, timestamp, out,
                                                                summary, say)
                          and bar is not None):
                        bar.update(1)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                summary.written = bag.count
                out.close()
                if bar is not None:
                    bar.close()
        if reader.damage and reader.damage not in summary.notes:
            summary.notes.append(reader.damage)
    return summary


@dataclass
class _Output:
    """Where a replayed frame's messages go: the bag (topics under ``prefix``) and the video."""

    bag: BagWriter
    prefix: str
    video: Path | None
    rate_hz: float
    writer: object = None  # cv2.VideoWriter, opened at the first frame

    def write(self, outcome, timestamp: int) -> None:
        for name, message in outcome.messages.items():
            self.bag.write(self.prefix + "/" + BY_NAME[name].topic, message, timestamp,
                           BY_NAME[name].qos)
        if self.video is None:
            return
        frame = _video_frame(outcome)
        if self.writer is None:
            self.writer = cv2.VideoWriter(str(self.video), cv2.VideoWriter_fourcc(*"mp4v"),
                                          self.rate_hz, (frame.shape[1], frame.shape[0]))
            if not self.writer.isOpened():
                raise BagError(f"cannot write the video {self.video}")
        self.writer.write(frame)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


def _replay_image(processor: FrameProcessor, msg, timestamp: int, out: _Output,
                  summary: ReplaySummary, say) -> bool:
    """One image through the frame path into ``out``; False when it was rejected."""
    outcome = processor.process(msg, header=rclpy_header(msg.header))
    if outcome.rejected is not None:
        reason = outcome.rejected.reason
        summary.rejected[reason] = summary.rejected.get(reason, 0) + 1
        if summary.rejected[reason] == 1:
            say(f"skipped image at {timestamp} ns: {outcome.rejected}")
        return False
    if outcome.no_grids is not None:
        note = f"no grids: {outcome.no_grids}"
        if note not in summary.notes:
            summary.notes.append(note)
    summary.grids |= outcome.products.grids is not None
    if summary.frames == 0:  # the model's description, once, as the node latches it
        outcome.messages.update(model_outputs(processor.model_products(outcome.products.header)))
    out.write(outcome, timestamp)
    summary.frames += 1
    return True


def _video_frame(outcome) -> np.ndarray:
    """The overlay with the bird's-eye view of both grids to its right (same height)."""
    overlay = outcome.messages["overlay"]
    left = np.frombuffer(overlay.data, np.uint8).reshape(overlay.height, overlay.width, 3)
    height = left.shape[0]
    if outcome.products.grids is not None:
        bev = bev_image(*outcome.products.grids, scale=1)
        right = cv2.resize(bev, (max(1, round(bev.shape[1] * height / bev.shape[0])), height),
                           interpolation=cv2.INTER_NEAREST)
    else:
        right = np.full((height, height // 2, 3), 40, np.uint8)
        cv2.putText(right, "no camera_info", (10, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8,
                    (200, 200, 200), 2, cv2.LINE_AA)
    # even sizes: many MP4 encoders need them
    frame = np.hstack([left, right])
    return frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]


def frames_from_bag(path: Path, image_topic: str | None = None):
    """(first CameraInfo or None, iterator of BGR frames) of a bag's camera, for the demo."""
    with BagReader(path) as reader:
        image, info_topic = choose_topics(reader.topics(), image_topic, None)
        info = None
        if info_topic is not None:
            for _, _, _, msg in reader.messages({info_topic.name}):
                info = camera_info_of(msg)
                break

    def frames():
        with BagReader(path) as reader:
            for _, msgtype, _, msg in reader.messages({image.name}):
                try:
                    yield to_bgr(msg)
                except ImageConversionError as exc:
                    print(f"skipped a frame: {exc}")
    return info, frames()
