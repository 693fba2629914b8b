"""`hybridnets replay`: a bag's camera images through the node's pipeline -> a new bag.

Every output message is what hybridnets_node would publish for that image (same pipeline,
same message builders), stamped with the image's header stamp and recorded at the image's
time in the input bag. A bag with several cameras is replayed as the multi-camera node
serves them: one pipeline, a frame processor per camera, outputs under each camera's name
and the fused surround grids. `hybridnets fleet` runs this per bag.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..core.camera import optical_transform
from ..core.visualize import bev_image
from ..pipeline.config import NodeConfig
from ..ros.conversions import ImageConversionError, to_bgr
from ..ros.frame import FrameProcessor
from ..ros.outputs import BY_NAME, model_outputs
from ..ros.surround import FUSED_QOS, FUSED_TOPICS, SurroundStage, has_fused_grids
from .bags import (CAMERA_INFO_TYPE, IMAGE_TYPES, BagError, BagReader, BagWriter, DamagedBag,
                   Topic)
from .static_tf import (TF_STATIC_TOPIC, StaticTransforms, read_static_transforms,
                        write_static_transforms)


# rosbag2 custom_data key of the bags `replay` and `fleet` write: who wrote it (fleet does
# not take them for inputs).
WRITER_KEY = "hybridnets_ros.writer"
# Image outputs written as sensor_msgs/CompressedImage with compress_images, and how:
# image_transport's format strings; PNG keeps masks and class labels exact.
COMPRESSED_FORMATS = {"drivable_mask": ".png", "lane_mask": ".png", "segmentation_label": ".png",
                      "segmentation_color": ".png", "overlay": ".jpg"}
JPEG_QUALITY = 80  # the overlay, a picture for people: 3x smaller than OpenCV's 95 at 720p


def compressed_image(image: Image, name: str) -> CompressedImage:
    """``image`` (mono8, rgb8 or bgr8) encoded as COMPRESSED_FORMATS says for output ``name``."""
    channels = 1 if image.encoding == "mono8" else 3
    pixels = np.frombuffer(image.data, np.uint8).reshape(image.height, image.width, channels)
    if image.encoding == "rgb8":
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    suffix = COMPRESSED_FORMATS[name]
    ok, data = cv2.imencode(suffix, pixels, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
                            if suffix == ".jpg" else [])
    if not ok:
        raise ValueError(f"cannot encode {name} as {suffix}")
    kind = "png" if suffix == ".png" else "jpeg"
    target = "mono8" if channels == 1 else "bgr8"
    return CompressedImage(header=image.header, format=f"{image.encoding}; {kind} compressed "
                           f"{target}", data=data.tobytes())


@dataclass
class ReplaySummary:
    frames: int = 0
    written: int = 0
    image_topics: list[str] = field(default_factory=list)
    camera_info_topics: list[str | None] = field(default_factory=list)
    grids: bool = False
    rejected: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # grids skipped, ...
    interrupted: bool = False
    images_read: int = 0              # image messages read from the bag (rejected ones too)
    images_indexed: int | None = None  # image messages the bag's index counts (None: no index)
    damage: list[str] = field(default_factory=list)  # what of the bag could not be read, where

    @property
    def lost(self) -> int | None:
        """Images the index counts that could not be read (None when it is not known)."""
        if self.images_indexed is None or self.interrupted:
            return None
        return max(0, self.images_indexed - self.images_read)

    def reading(self) -> str:
        """How much of a damaged bag was read: "6 of 12 images read, 6 lost"."""
        if self.lost is None:
            return f"{self.images_read} images read, how many were lost is unknown (no index)"
        return f"{self.images_read} of {self.images_indexed} images read, {self.lost} lost"


@dataclass(frozen=True)
class CameraTopics:
    """One camera of a bag: its images and the CameraInfo beside them."""

    name: str            # "" for a bag's only camera (outputs unprefixed, as the node's)
    image: Topic
    info: Topic | None


def _describe(topics: list[Topic]) -> str:
    return ", ".join(f"{t.name} ({t.msgtype})" for t in topics) or "none"


def _namespace(topic: str) -> str:
    """/cam/image_raw[/compressed] -> /cam: where the camera's other topics are."""
    return topic.removesuffix("/compressed").rsplit("/", 1)[0]


def choose_cameras(topics: list[Topic], image_topics=None,
                   camera_info_topic: str | None = None) -> list[CameraTopics]:
    """The cameras of a bag: the image topics (raw or compressed; a compressed one beside
    its raw twin is the same camera) with a CameraInfo beside them (``/cam/image_raw`` and
    ``/cam/camera_info``), or a bag's only image topic, unless ``image_topics`` names them.
    Other image topics (masks, overlays: a replayed bag's outputs) are not cameras. Named
    by the images' namespace (``/front/image_raw`` -> front) when there are several."""
    by_name = {t.name: t for t in topics}
    infos = [t for t in topics if t.msgtype == CAMERA_INFO_TYPE]
    if image_topics:
        for name in image_topics:
            if name not in by_name or by_name[name].msgtype not in IMAGE_TYPES:
                what = "has no topic" if name not in by_name else "has no image topic"
                raise BagError(f"the bag {what} {name}; its topics: {_describe(topics)}")
        images = [by_name[name] for name in dict.fromkeys(image_topics)]
    else:
        images = [t for t in topics if t.msgtype in IMAGE_TYPES and not (
            t.name.endswith("/compressed") and t.name.removesuffix("/compressed") in by_name)]
        if not images:
            raise BagError(f"no image topics in the bag; its topics: {_describe(topics)}")
        calibrated = [t for t in images
                      if any(_namespace(i.name) == _namespace(t.name) for i in infos)]
        if calibrated:
            images = calibrated
        elif len(images) > 1:
            raise BagError(f"no camera in the bag: none of its image topics has a CameraInfo "
                           f"beside it (/cam/image_raw and /cam/camera_info); name the cameras "
                           f"with --image-topics; its topics: {_describe(topics)}")
    if camera_info_topic:
        if camera_info_topic not in by_name or by_name[camera_info_topic].msgtype != CAMERA_INFO_TYPE:
            raise BagError(f"the bag has no CameraInfo topic {camera_info_topic}; its topics: "
                           f"{_describe(topics)}")
        if len(images) > 1:
            raise BagError(f"--camera-info-topic needs one image topic, the bag has "
                           f"{len(images)}: choose one with --image-topic")
        return [CameraTopics("", images[0], by_name[camera_info_topic])]
    cameras = []
    for image in images:
        beside = [t for t in infos if _namespace(t.name) == _namespace(image.name)]
        if len(beside) == 1:
            info = beside[0]
        elif len(images) == 1 and len(infos) == 1:
            info = infos[0]  # a bag's only camera and only calibration
        elif len(images) == 1 and len(infos) > 1:
            raise BagError(f"several CameraInfo topics and none beside {image.name}: choose one "
                           f"with --camera-info-topic; its topics: {_describe(topics)}")
        else:
            info = None
        cameras.append(CameraTopics("", image, info))
    if len(cameras) == 1:
        return cameras
    names = [_namespace(c.image.name).strip("/") or c.image.name.strip("/") for c in cameras]
    if len(set(names)) < len(names):  # two image topics in one namespace: the full names
        names = [c.image.name.removesuffix("/compressed").strip("/") for c in cameras]
    return [CameraTopics(name, c.image, c.info) for name, c in zip(names, cameras)]


def bag_cameras(path: Path, image_topics=None, camera_info_topic: str | None = None
                ) -> list[CameraTopics]:
    """The cameras ``replay`` takes from the bag at ``path``: a bag checked before a model
    is loaded for it. Raises BagError (DamagedBag when nothing in it can be read)."""
    with BagReader(path) as reader:
        return cameras_of(reader, image_topics, camera_info_topic)


def uncalibrated_images(topics: list[Topic], cameras: list[CameraTopics]) -> list[str]:
    """The bag's image topics that are not among ``cameras`` (not taken for cameras)."""
    taken = {c.image.name.removesuffix("/compressed") for c in cameras}
    return [t.name for t in topics if t.msgtype in IMAGE_TYPES
            and t.name.removesuffix("/compressed") not in taken]


def cameras_of(reader: BagReader, image_topics=None,
               camera_info_topic: str | None = None) -> list[CameraTopics]:
    """The cameras of an open bag (choose_cameras); DamagedBag when the topic may have
    been in what was lost."""
    try:
        return choose_cameras(reader.topics(), image_topics, camera_info_topic)
    except BagError as exc:
        if reader.damage:  # the topic may have been in what was lost
            raise DamagedBag(f"{exc}; the bag is damaged: {'; '.join(reader.damage)}") from None
        raise


def choose_topics(topics: list[Topic], image_topic: str | None,
                  camera_info_topic: str | None) -> tuple[Topic, Topic | None]:
    """The one camera's (image, CameraInfo) topics; several cameras are an error here."""
    cameras = choose_cameras(topics, [image_topic] if image_topic else None, camera_info_topic)
    if len(cameras) > 1:
        raise BagError(f"several image topics in the bag: choose one with --image-topic; "
                       f"its topics: {_describe(topics)}")
    return cameras[0].image, cameras[0].info


def camera_info_of(msg) -> CameraInfo:
    """rosbags CameraInfo (ROS 2, or ROS 1 with upper-case K/D/P) -> rclpy CameraInfo."""
    info = CameraInfo(width=int(msg.width), height=int(msg.height),
                      distortion_model=str(msg.distortion_model))
    for field_name in ("k", "d", "p", "r"):
        value = getattr(msg, field_name, None)
        if value is None:
            value = getattr(msg, field_name.upper(), [])
        setattr(info, field_name, [float(v) for v in value])
    return info


def rclpy_header(header) -> Header:
    return Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                  frame_id=str(header.frame_id))


@dataclass
class CameraReplay:
    """One camera of a replay: its topics, frame processor and output topics' prefix."""

    topics: CameraTopics
    processor: FrameProcessor
    prefix: str
    frames: int = 0
    latest: tuple[FrameProcessor, Header, object] | None = None  # for the fused grids


def camera_processors(pipeline, config: NodeConfig, cameras: list[CameraTopics],
                      static: StaticTransforms, prefix: str) -> list[CameraReplay]:
    """A frame processor per camera over one pipeline, posed as the node poses them: a
    bag's only camera by camera_pose; several by the camera_poses entry of a camera named
    in ``cameras``. Where that gives no pose (an empty one: TF), the bag's /tf_static
    chain from the image's frame to ground_frame."""

    def lookup(ground_frame: str, header: Header):
        return static.lookup(ground_frame, header.frame_id)

    replays = []
    for camera in cameras:
        if camera.name and camera.name in config.cameras:
            camera_config = config.camera_config(config.cameras.index(camera.name))
        elif camera.name:
            camera_config = config.with_changes(camera_pose=[], cameras=[], camera_poses=[])
        else:
            camera_config = config.with_changes(cameras=[], camera_poses=[])
        replays.append(CameraReplay(camera, FrameProcessor(pipeline, camera_config, lookup),
                                    prefix + (f"/{camera.name}" if camera.name else "")))
    return replays


def _first_headers(reader: BagReader, cameras: list[CameraTopics], start_ns: int | None = None,
                   end_ns: int | None = None) -> dict[str, object]:
    """image topic -> the header of its first message in [start_ns, end_ns) (read until
    each camera has one)."""
    wanted, found = {c.image.name for c in cameras if c.image.count != 0}, {}
    if wanted:
        for topic, _, _, msg in reader.messages(wanted, start_ns, end_ns):
            found.setdefault(topic, msg.header)
            if len(found) == len(wanted):
                break
    return found


def _output_transforms(replays: list[CameraReplay], static: StaticTransforms,
                       headers: dict[str, object]) -> StaticTransforms:
    """What /tf_static of the output bag holds: the input's static transforms, with the
    pose of each camera posed by the parameters (replacing the input's parent of its frame)."""
    out = StaticTransforms(dict(static.parents))
    for camera in replays:
        header, config = headers.get(camera.topics.image.name), camera.processor.config
        if header is not None and header.frame_id and config.camera_pose:
            out.set(config.ground_frame, header.frame_id.lstrip("/"),
                    *optical_transform(config.camera_pose))
    return out


def replay(in_bag: Path, out_bag: Path | None, pipeline, config: NodeConfig, *,
           image_topics=None, camera_info_topic=None, keep_input: bool = False,
           video: Path | None = None, storage: str = "mcap", namespace: str = "",
           progress_factory=None, say=print, on_frame=None,
           outputs: frozenset[str] | None = None, compress_images: bool = False,
           window: tuple[int | None, int | None] | None = None, warmup_ns: int = 0,
           custom_data: dict[str, str] | None = None,
           indexed: frozenset[str] = frozenset()) -> ReplaySummary:
    """Every image of every camera of ``in_bag`` (or of ``image_topics``) through the
    node's frame path into ``out_bag``: each camera's outputs (under its name when there are
    several, as the multi-camera node publishes them), the fused grids of several cameras,
    and /tf_static with the camera poses. ``video`` shows the first camera.
    ``on_frame(camera, timestamp, header, outcome, seconds)`` sees every image, rejected ones
    too. A damaged bag is read as far as it can be: the summary's ``damage`` says where,
    ``images_read`` and ``images_indexed`` how much; one with nothing readable raises
    DamagedBag.

    For ``hybridnets fleet``: ``outputs`` (output names; default every enabled one) are the
    outputs written, ``out_bag`` None writes no bag (the frames still reach ``on_frame``),
    ``compress_images`` writes image outputs as CompressedImage (``<topic>/compressed``:
    masks and labels PNG, lossless; overlay JPEG), ``window`` = (start, end) ns replays the
    images logged in [start, end) only, after ``warmup_ns`` of images before ``start`` that
    go through the frame path unwritten (tracks warm up as in a whole replay) and with each
    camera's latest CameraInfo from before, ``custom_data`` marks the bag's writer and
    ``indexed`` (output names) are built for ``on_frame`` even where not written."""
    summary = ReplaySummary()
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    start, end = window or (None, None)
    read_from = None if start is None else start - warmup_ns
    with BagReader(in_bag) as reader:
        topics = reader.topics()
        cameras = cameras_of(reader, image_topics, camera_info_topic)
        summary.image_topics = [c.image.name for c in cameras]
        summary.camera_info_topics = [c.info.name if c.info else None for c in cameras]
        counts = [c.image.count for c in cameras]
        summary.images_indexed = None if None in counts or window else sum(counts)
        static = read_static_transforms(reader)
        replays = camera_processors(pipeline, config, cameras, static, prefix)
        headers = _first_headers(reader, cameras, start, end)
        by_image = {r.topics.image.name: r for r in replays}
        by_info = {r.topics.info.name: r for r in replays if r.topics.info is not None}
        if read_from is not None:  # the calibration each camera had when the window opens
            for topic, (_, _, msg) in reader.latest_before(set(by_info), read_from).items():
                by_info[topic].processor.set_camera_info(camera_info_of(msg))
        read = set(by_image) | set(by_info)
        if keep_input:
            read |= {t.name for t in topics if t.name != TF_STATIC_TOPIC}
        bar = progress_factory(summary.images_indexed) if progress_factory else None
        fused = _FusedGrids(config, prefix) if out_bag is not None and len(replays) > 1 \
            and has_fused_grids(pipeline.adapter) and (outputs is None or outputs & {
                "drivable_grid", "lane_grid"}) else None
        with _writer(out_bag, storage, custom_data) as bag:
            out = _Output(bag, video, reader.rate_hz(cameras[0].image) or 10.0, outputs,
                          compress_images, indexed)
            try:
                for topic, msgtype, timestamp, msg in reader.messages(read, read_from, end):
                    if topic in by_info:
                        by_info[topic].processor.set_camera_info(camera_info_of(msg))
                    if start is not None and timestamp < start:  # warm-up
                        if topic in by_image:
                            by_image[topic].processor.process(msg, set(),
                                                              rclpy_header(msg.header))
                        continue
                    if keep_input:
                        bag.write_object(topic, msgtype, msg, timestamp)
                    if out.transforms is None and topic in by_image:
                        out.transforms = _output_transforms(replays, static, headers)
                        if out.transforms:
                            write_static_transforms(bag, out.transforms, timestamp,
                                                    (msg.header.stamp.sec, msg.header.stamp.nanosec))
                    if topic in by_image:
                        summary.images_read += 1
                        camera = by_image[topic]
                        if _replay_image(camera, msg, timestamp, out, summary, say, on_frame,
                                         first=camera is replays[0]):
                            if fused is not None:
                                fused.update(bag, replays, timestamp)
                            if bar is not None:
                                bar.update(1)
            except KeyboardInterrupt:
                summary.interrupted = True
            finally:
                summary.written = bag.count
                out.close()
                if bar is not None:
                    bar.close()
        summary.damage = reader.damage
    return summary


class _NoBag:
    """Where the outputs go when no bag is written (``hybridnets fleet --outputs index``)."""

    count = 0

    def write(self, *args, **kwargs) -> None:
        pass

    write_object = write

    def __enter__(self) -> "_NoBag":
        return self

    def __exit__(self, *exc) -> None:
        pass


def _writer(path: Path | None, storage: str, custom_data: dict[str, str] | None):
    return _NoBag() if path is None else BagWriter(
        path, storage, custom_data={WRITER_KEY: "replay", **(custom_data or {})})


@dataclass
class _FusedGrids:
    """The surround grids of several cameras, written at ``fused_rate`` in bag time from
    every camera's latest result, as the multi-camera node publishes them."""

    config: NodeConfig
    prefix: str
    stage: SurroundStage = field(default_factory=SurroundStage)
    last_ns: int | None = None

    def update(self, bag: BagWriter, replays: list[CameraReplay], timestamp: int) -> None:
        if self.last_ns is not None and timestamp - self.last_ns < 1e9 / self.config.fused_rate:
            return
        if all(r.latest is None for r in replays):
            return
        # As the node: all unknown, stamped now, when no camera sees a cell.
        grids, _ = self.stage.messages([r.latest for r in replays], self.config.fused_grid,
                                       self.config.ground_frame,
                                       Time(sec=timestamp // 10**9, nanosec=timestamp % 10**9),
                                       [r.topics.name for r in replays])
        for name, message in grids.items():
            bag.write(f"{self.prefix}/{FUSED_TOPICS[name]}", message, timestamp, FUSED_QOS)
        self.last_ns = timestamp


@dataclass
class _Output:
    """Where a replayed frame's messages go: the bag (topics under the camera's prefix) and
    the video (the first camera's)."""

    bag: BagWriter | _NoBag
    video: Path | None
    rate_hz: float
    outputs: frozenset[str] | None = None  # the outputs written (None: all built)
    compress: bool = False                 # image outputs as CompressedImage
    indexed: frozenset[str] = frozenset()  # also built (for on_frame), not written
    writer: object = None  # cv2.VideoWriter, opened at the first frame
    transforms: StaticTransforms | None = None  # written to /tf_static before the first image

    def write(self, outcome, timestamp: int, prefix: str, video: bool) -> None:
        for name, message in outcome.messages.items():
            if self.outputs is not None and name not in self.outputs and BY_NAME[name].per_frame:
                continue
            topic = prefix + "/" + BY_NAME[name].topic
            if self.compress and name in COMPRESSED_FORMATS:
                topic, message = f"{topic}/compressed", compressed_image(message, name)
            self.bag.write(topic, message, timestamp, BY_NAME[name].qos)
        if self.video is None or not video:
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


def _replay_image(camera: CameraReplay, msg, timestamp: int, out: _Output,
                  summary: ReplaySummary, say, on_frame, first: bool) -> bool:
    """One image through its camera's frame path into ``out``; False when it was rejected."""
    processor = camera.processor
    header = rclpy_header(msg.header)
    started = time.perf_counter()
    outcome = processor.process(msg, None if out.outputs is None else out.outputs | out.indexed,
                                header=header)
    seconds = time.perf_counter() - started
    if on_frame is not None:
        on_frame(camera.topics, timestamp, header, outcome, seconds)
    if outcome.rejected is not None:
        reason = outcome.rejected.reason
        summary.rejected[reason] = summary.rejected.get(reason, 0) + 1
        if summary.rejected[reason] == 1:
            say(f"skipped image at {timestamp} ns: {outcome.rejected}")
        return False
    if outcome.no_grids is not None:
        note = f"no grids{f' ({camera.topics.name})' if camera.topics.name else ''}: " \
               f"{outcome.no_grids}"
        if note not in summary.notes:
            summary.notes.append(note)
    summary.grids |= outcome.products.grids is not None
    if camera.frames == 0:  # the model's description, once per camera, as the node latches it
        outcome.messages.update(model_outputs(processor.model_products(outcome.products.header)))
    out.write(outcome, timestamp, camera.prefix, video=first)
    camera.latest = (processor, header, outcome.result)
    camera.frames += 1
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
