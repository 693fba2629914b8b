"""Reading and writing bag files with the pure-Python ``rosbags`` library (no rosbag2).

Reads ROS 2 bags (sqlite3 and mcap storage) and ROS 1 bags; messages come back as rosbags
objects whose field names match the ROS 2 messages, so the node's conversions apply.
Writes ROS 2 bags from rclpy messages serialised by rclpy itself (CDR), so the recorded
outputs are byte for byte what the node would publish. A damaged MCAP file (a recording
that was cut off) is salvaged record by record up to the damage.

Written bags are what rosbag2 of every current distro reads (Humble, Jazzy, Kilted):
metadata version 8 with each topic's offered QoS as a YAML string, MCAP channels with
``offered_qos_profiles`` and ``topic_type_hash``, schemas with ``MSG: pkg/msg/Type``
dependency headers. Version 9 writes offered_qos_profiles as a YAML list, which Humble's
reader takes for a string and fails on.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message

# Humble reads metadata up to this version with offered_qos_profiles as a string; Jazzy
# and Kilted read it too.
METADATA_VERSION = 8
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class BagError(Exception):
    """A bag that cannot be read or written; the message says why."""


@lru_cache(maxsize=1)
def typestore():
    """Message definitions: ROS 2 Jazzy's standard set plus vision_msgs (4.x)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in sorted(_vision_msgs_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def _vision_msgs_dir() -> Path:
    """The installed .msg files of vision_msgs (prefix/share/vision_msgs/msg, found from the
    Python package), else this repository's copy."""
    try:
        import vision_msgs
        prefix = Path(vision_msgs.__file__).resolve().parents[4]  # prefix/lib/pythonX/site-packages/vision_msgs
        installed = prefix / "share" / "vision_msgs" / "msg"
        if installed.is_dir():
            return installed
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / "msg" / "vision_msgs" / "msg"


def is_bag(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or \
        (path.is_file() and path.suffix in (".mcap", ".db3", ".bag"))


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str
    count: int | None  # None when unknown (salvaged bag)


class BagReader:
    """Messages of selected topics in time order: (topic, bag timestamp ns, message)."""

    def __init__(self, path: str | Path):
        from rosbags.highlevel import AnyReader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        self.damage: str | None = None  # why reading stopped early, if it did
        self._reader = None
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several types for unreadable input
            self._reader = None
            self._mcap = self._mcap_file()
            self._salvaged = self._salvage_channels() if self._mcap is not None else set()
            if not self._salvaged:
                raise BagError(f"cannot read {self.path} as a ROS bag: {exc}") from None
            self.damage = f"damaged bag ({exc}); salvaging messages up to the damage"

    def _mcap_file(self) -> Path | None:
        if self.path.is_file() and self.path.suffix == ".mcap":
            return self.path
        found = sorted(self.path.glob("*.mcap")) if self.path.is_dir() else []
        return found[0] if found else None

    def topics(self) -> list[Topic]:
        if self._reader is not None:
            counts: dict[str, Topic] = {}
            for c in self._reader.connections:
                known = counts.get(c.topic)
                counts[c.topic] = Topic(c.topic, c.msgtype, c.msgcount + (known.count if known else 0))
            return sorted(counts.values(), key=lambda t: t.name)
        return sorted({Topic(topic, msgtype, None) for topic, msgtype in self._salvaged},
                      key=lambda t: t.name)

    def rate_hz(self, topic: Topic) -> float | None:
        """Mean message rate of a topic over the bag's duration (None if unknown)."""
        if self._reader is None or not topic.count or topic.count < 2 or not self._reader.duration:
            return None
        return (topic.count - 1) / (self._reader.duration / 1e9)

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, object]]:
        """(topic, msgtype, timestamp ns, message); stops at damage (see ``damage``)."""
        if self._reader is None:
            yield from self._salvage(topics)
            return
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = self._reader.messages(connections=connections)
        while True:
            try:
                connection, timestamp, raw = next(iterator)
                msg = self._reader.deserialize(raw, connection.msgtype)
            except StopIteration:
                return
            except Exception as exc:
                self.damage = f"damaged bag: reading stopped ({type(exc).__name__}: {exc})"
                return
            yield connection.topic, connection.msgtype, timestamp, msg

    def _records(self):
        """The file's records in order, streamed (a damaged recording can be large)."""
        from mcap.stream_reader import StreamReader
        with open(self._mcap, "rb") as stream:
            yield from StreamReader(stream).records

    def _salvage_channels(self) -> set[tuple[str, str]]:
        from mcap.records import Channel, Schema
        schemas, channels = {}, set()
        try:
            for record in self._records():
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    channels.add((record.topic, schemas.get(record.schema_id, "?")))
        except Exception:
            pass  # the damage: everything before it is what there is
        return channels

    def _salvage(self, topics: set[str]):
        from mcap.records import Channel, Message, Schema
        store = typestore()
        schemas, channels = {}, {}
        try:
            for record in self._records():
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    channels[record.id] = (record.topic, schemas.get(record.schema_id))
                elif isinstance(record, Message) and record.channel_id in channels:
                    topic, msgtype = channels[record.channel_id]
                    if topic in topics and msgtype in store.types:
                        yield topic, msgtype, record.log_time, store.deserialize_cdr(record.data, msgtype)
        except Exception as exc:
            self.damage = f"damaged bag: salvaged up to {type(exc).__name__} {exc}".strip()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def offered_qos(profile: QoSProfile):
    """An rclpy QoS profile as the rosbags Qos recorded as a topic's offered profile
    (rclpy's policy values are rmw's, which the metadata stores)."""
    from rosbags.interfaces import (Qos, QosDurability, QosHistory, QosLiveliness,
                                    QosReliability, QosTime)

    def duration(d) -> QosTime:
        return QosTime(*divmod(d.nanoseconds, 10**9))

    return Qos(QosHistory(int(profile.history)), profile.depth,
               QosReliability(int(profile.reliability)), QosDurability(int(profile.durability)),
               duration(profile.deadline), duration(profile.lifespan),
               QosLiveliness(int(profile.liveliness)),
               duration(profile.liveliness_lease_duration),
               profile.avoid_ros_namespace_conventions)


def rosbag2_msgdef(msgdef: str) -> str:
    """A rosbags ros2msg definition with its dependency headers as rosbag2 writes them
    (``MSG: pkg/msg/Type``; rosbags writes ``MSG: pkg/Type``)."""
    return re.sub(r"^MSG: ([^/\s]+)/([^/\s]+)$", r"MSG: \1/msg/\2", msgdef, flags=re.MULTILINE)


@lru_cache(maxsize=1)
def _writer_class():
    """rosbags' Writer whose MCAP channels carry ``topic_type_hash`` beside
    ``offered_qos_profiles`` in their metadata, as rosbag2's MCAP plugin writes them."""
    from io import BytesIO

    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.rosbag2.storage_mcap import Channel, McapWriter, write_channel, write_string

    class McapChannelsWithHash(McapWriter):
        def add_connection(self, connection, offered_qos_profiles: str) -> None:
            metadata = BytesIO()  # an MCAP string map: key, value, key, value
            for text in ("offered_qos_profiles", offered_qos_profiles,
                         "topic_type_hash", connection.digest):
                write_string(metadata, text)
            self.channels.append(Channel(connection.id, connection.msgtype, connection.topic,
                                         connection.ext.serialization_format,
                                         metadata.getvalue()))
            self.channel_stats[connection.id] = 0
            write_channel(self.chunk.bio, self.channels[-1], self.schemas)

    class Rosbag2Writer(Writer):
        STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: McapChannelsWithHash}

    return Rosbag2Writer


def compress_chunks(writer, storage: str) -> None:
    """zstd-compressed MCAP chunks: the MCAP library's default chunk compression, which
    rosbag2's MCAP plugin writes unless configured otherwise (the compression is inside
    the MCAP file, so every MCAP reader decodes it and metadata.yaml names no rosbag2
    compression). sqlite3
    bags stay uncompressed: rosbag2's file or message compression there needs its zstd
    plugin on the reading side."""
    if storage == "mcap":
        from rosbags.rosbag2 import CompressionFormat, CompressionMode
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)


class BagWriter:
    """A new ROS 2 bag (mcap or sqlite3) of rclpy messages or rosbags objects."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        from rosbags.rosbag2 import StoragePlugin

        plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f"unknown storage '{storage}' (mcap or sqlite3)")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} already exists: choose another output or remove it")
        self._writer = _writer_class()(self.path, version=METADATA_VERSION,
                                       storage_plugin=plugins[storage])
        compress_chunks(self._writer, storage)
        self._writer.open()
        self._connections = {}
        self.count = 0

    def _connection(self, topic: str, msgtype: str, qos: QoSProfile | None = None):
        if topic not in self._connections:
            store = typestore()
            msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
            self._connections[topic] = self._writer.add_connection(
                topic, msgtype, msgdef=rosbag2_msgdef(msgdef), rihs01=store.hash_rihs01(msgtype),
                offered_qos_profiles=[offered_qos(qos)] if qos is not None else [])
        return self._connections[topic]

    def write(self, topic: str, msg, timestamp: int, qos: QoSProfile | None = None) -> None:
        """An rclpy message (serialised by rclpy); ``qos``: the profile the topic is offered
        with (recorded with its first message; `ros2 bag play` publishes with it)."""
        msgtype = type(msg).__module__.split(".")[0] + "/msg/" + type(msg).__name__
        self._writer.write(self._connection(topic, msgtype, qos), timestamp, serialize_message(msg))
        self.count += 1

    def write_object(self, topic: str, msgtype: str, msg, timestamp: int,
                     qos: QoSProfile | None = None) -> None:
        """A rosbags message object (e.g. an input message copied through, whose offered QoS
        is not known here: then none is recorded and players use their default)."""
        data = typestore().serialize_cdr(msg, msgtype)
        self._writer.write(self._connection(topic, msgtype, qos), timestamp, data)
        self.count += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
