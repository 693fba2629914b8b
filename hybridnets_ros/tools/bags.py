"""Reading and writing bag files with the pure-Python ``rosbags`` library (no rosbag2).

Reads ROS 2 bags (sqlite3 and mcap storage) and ROS 1 bags; messages come back as rosbags
objects whose field names match the ROS 2 messages, so the node's conversions apply.
Writes ROS 2 bags from rclpy messages serialised by rclpy itself (CDR), so the recorded
outputs are byte for byte what the node would publish. A damaged bag is read as far as
it can be (BagReader).

Written bags are what rosbag2 of every current distro reads (Humble, Jazzy, Kilted):
metadata version 8 with each topic's offered QoS as a YAML string, MCAP channels with
``offered_qos_profiles`` and ``topic_type_hash``, schemas with ``MSG: pkg/msg/Type``
dependency headers. Version 9 writes offered_qos_profiles as a YAML list, which Humble's
reader takes for a string and fails on.
"""
from __future__ import annotations

import contextlib
import heapq
import importlib.util
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import yaml
from rclpy.qos import QoSProfile
from rclpy.serialization import serialize_message

# Humble reads metadata up to this version with offered_qos_profiles as a string; Jazzy
# and Kilted read it too.
METADATA_VERSION = 8
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class BagError(Exception):
    """A bag that cannot be read or written; the message says why."""


class DamagedBag(BagError):
    """A bag so damaged that nothing in it can be read; the message says where."""


# The packages built from msg/ (scripts/build_ros_interfaces.sh), not in rosbags' stores.
INTERFACE_PACKAGES = ("vision_msgs", "hybridnets_msgs")


@lru_cache(maxsize=1)
def typestore():
    """Message definitions: ROS 2 Jazzy's standard set plus the interface packages in msg/
    (vision_msgs 4.x, hybridnets_msgs)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for package in INTERFACE_PACKAGES:
        for path in sorted(_interface_dir(package).glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store


def _interface_dir(package: str) -> Path:
    """The installed .msg files of ``package`` (prefix/share/<package>/msg, found from the
    Python package), else this repository's copy."""
    try:
        module = importlib.import_module(package)
        prefix = Path(module.__file__).resolve().parents[4]  # prefix/lib/pythonX/site-packages/<package>
        installed = prefix / "share" / package / "msg"
        if installed.is_dir():
            return installed
    except ImportError:
        pass
    return Path(__file__).resolve().parents[2] / "msg" / package / "msg"


def is_bag(path: str | Path) -> bool:
    path = Path(path)
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or \
        (path.is_file() and path.suffix in (".mcap", ".db3", ".bag"))


@dataclass(frozen=True)
class Topic:
    name: str
    msgtype: str
    count: int | None  # as the bag's index says; None when it has none (a cut-off recording)


class BagReader:
    """Messages of selected topics in time order: (topic, msgtype, bag timestamp ns, message).

    A damaged bag is read as far as it can be: MCAP files chunk by chunk, past bad chunks,
    and when their summary is gone (a recording cut off) record by record up to the damage
    and on from the next chunk (tools.mcap_chunks); sqlite3 files that rosbags cannot open
    or read to the end, row by row past unreadable rows (tools.sqlite_rows). ``damage``
    says what was lost and where. A topic's ``count`` is what the bag's index says it held
    (the MCAP summary, else metadata.yaml): beside the messages read, what was lost."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        self._damage: list[str] = []
        self._info = _bag_information(self.path)
        self._reader = None              # rosbags, for sqlite3 and ROS 1 bags
        self._mcaps: list = []           # McapChunks per MCAP file
        self._sqlite: list | None = None  # SqliteRows per file, once rosbags failed
        self._store = None
        files = self._storage_files(".mcap")
        if files and importlib.util.find_spec("mcap") is not None:
            self._open_mcap(files)
        else:  # without the mcap package rosbags reads MCAP files, intact ones only
            self._open_rosbags(mcap_hint=bool(files))
        if not self.topics() and self.damage:
            self.close()
            raise DamagedBag(f"cannot read {self.path}: {'; '.join(self._damage)}")

    @property
    def damage(self) -> list[str]:
        """What could not be read, where (empty for an intact bag)."""
        files = [*self._mcaps, *(self._sqlite or [])]
        return self._damage + [d for f in files for d in f.damage]

    def _note(self, what: str) -> None:
        if what not in self._damage:  # messages() may run several times
            self._damage.append(what)

    def _storage_files(self, suffix: str) -> list[Path]:
        """The bag's storage files with ``suffix``: metadata.yaml's, else those in the folder."""
        if self.path.is_file():
            return [self.path] if self.path.suffix == suffix else []
        listed = [self.path / name for name in self._info.get("relative_file_paths") or []
                  if str(name).endswith(suffix)]
        for missing in (p for p in listed if not p.is_file()):
            self._note(f"{missing.name}, listed in metadata.yaml, is missing")
        return [p for p in listed if p.is_file()] or sorted(self.path.glob(f"*{suffix}"))

    def _open_mcap(self, files: list[Path]) -> None:
        from .mcap_chunks import McapChunks, NotMcap
        try:
            for file in files:
                self._mcaps.append(McapChunks(file))
        except (NotMcap, OSError) as exc:
            self.close()
            raise BagError(f"cannot read {self.path} as a ROS bag: {exc}") from None

    def _open_rosbags(self, mcap_hint: bool = False) -> None:
        from rosbags.highlevel import AnyReader
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as exc:  # rosbags raises several types for unreadable input
            self._reader = None
            if not self._open_sqlite():
                hint = " (`pip install mcap` reads a damaged MCAP file past the damage)" \
                    if mcap_hint else ""
                raise BagError(f"cannot read {self.path} as a ROS bag: {exc}{hint}") from None
            self._note(f"rosbags cannot open it ({exc}): read row by row")

    def _open_sqlite(self) -> bool:
        """The bag's sqlite3 files opened row by row (after rosbags failed on them)."""
        from .sqlite_rows import NotSqlite, SqliteRows
        files = self._storage_files(".db3")
        try:
            self._sqlite = [SqliteRows(file) for file in files]
        except (NotSqlite, OSError, sqlite3.Error):
            self._sqlite = None
        return bool(self._sqlite)

    def topics(self) -> list[Topic]:
        found: dict[str, Topic] = {}
        if self._reader is not None:
            for c in self._reader.connections:
                known = found.get(c.topic)
                found[c.topic] = Topic(c.topic, c.msgtype, c.msgcount + (known.count if known else 0))
            return sorted(found.values(), key=lambda t: t.name)
        counts: dict[str, list[int | None]] = {}
        for name, msgtype, count in self._channels():
            found.setdefault(name, Topic(name, msgtype, None))
            counts.setdefault(name, []).append(count)
        indexed = _indexed_counts(self._info)  # where the files do not count their messages
        return sorted((replace(t, count=sum(counts[t.name]) if None not in counts[t.name]
                               else indexed.get(t.name)) for t in found.values()),
                      key=lambda t: t.name)

    def _channels(self) -> Iterator[tuple[str, str, int | None]]:
        """(topic, msgtype, messages per the file's index or None) of every MCAP channel or
        sqlite3 topic."""
        for mcap in self._mcaps:
            for c in mcap.channels.values():
                schema = mcap.schemas.get(c.schema_id)
                yield (c.topic, schema.name if schema else "?",
                       None if mcap.counts is None else mcap.counts.get(c.id, 0))
        for rows in self._sqlite or []:
            for name, msgtype in rows.topics.values():
                yield name, msgtype, None

    def rate_hz(self, topic: Topic) -> float | None:
        """Mean message rate of a topic over the bag's duration (None if unknown)."""
        if self._reader is not None:
            duration = self._reader.duration
        elif self._mcaps and all(m.start_ns is not None for m in self._mcaps):
            duration = max(m.end_ns for m in self._mcaps) - min(m.start_ns for m in self._mcaps)
        else:
            duration = (self._info.get("duration") or {}).get("nanoseconds")
        if not topic.count or topic.count < 2 or not duration:
            return None
        return (topic.count - 1) / (duration / 1e9)

    def time_range(self) -> tuple[int, int] | None:
        """(first, last) message time in ns, as the bag's index says (None: not known)."""
        if self._reader is not None:
            return (self._reader.start_time, self._reader.end_time - 1) \
                if self._reader.message_count else None
        if self._mcaps and all(m.start_ns is not None for m in self._mcaps):
            return min(m.start_ns for m in self._mcaps), max(m.end_ns for m in self._mcaps)
        return None

    def custom_data(self) -> dict:
        """rosbag2's custom_data of the bag: metadata.yaml's, else its MCAP files' own copy
        (a bag file without its folder)."""
        data = self._info.get("custom_data")
        if not data and self._mcaps:
            data = self._mcaps[0].rosbag2_metadata().get("custom_data")
        return data if isinstance(data, dict) else {}

    def latest_before(self, topics: set[str], time_ns: int) -> dict[str, tuple[str, int, object]]:
        """topic -> (msgtype, timestamp, message) of its last message before ``time_ns``:
        the state a reader starting there lacks (the latest CameraInfo). An indexed MCAP
        file is read backwards chunk by chunk; other bags from the start."""
        found: dict[str, tuple[str, int, object]] = {}
        if self._mcaps and all(m.indexed for m in self._mcaps):
            store = self._typestore()
            for mcap in self._mcaps:
                channels = {c.id: c for c in mcap.channels.values() if c.topic in topics}
                for channel_id, message in mcap.latest_before(set(channels), time_ns).items():
                    topic = channels[channel_id].topic
                    schema = mcap.schemas.get(channels[channel_id].schema_id)
                    if topic in found and found[topic][1] > message.log_time:
                        continue
                    with contextlib.suppress(Exception):  # a damaged message: none then
                        msgtype = schema.name if schema else "?"
                        found[topic] = (msgtype, message.log_time,
                                        store.deserialize_cdr(message.data, msgtype))
            return found
        for topic, msgtype, timestamp, msg in self.messages(topics, end_ns=time_ns):
            found[topic] = (msgtype, timestamp, msg)
        return found

    def messages(self, topics: set[str], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[tuple[str, str, int, object]]:
        """(topic, msgtype, timestamp ns, message) past any damage (see ``damage``), those
        logged in [start_ns, end_ns) when given (an indexed MCAP file or a rosbags-read bag
        then skips what lies outside)."""
        if self._mcaps:
            rows = self._mcap_rows(topics, start_ns, end_ns)
        elif self._sqlite is not None:
            rows = (row for row in self._sqlite_rows(topics)
                    if (start_ns is None or row[0] >= start_ns)
                    and (end_ns is None or row[0] < end_ns))
        else:
            yield from self._rosbags_messages(topics, start_ns, end_ns)
            return
        store = self._typestore()
        undecodable: dict[str, list] = {}
        for timestamp, topic, msgtype, data in rows:
            try:
                msg = store.deserialize_cdr(data, msgtype)
            except Exception as exc:  # a damaged message, or a type without definition
                undecodable.setdefault(topic, [0, timestamp, exc])[0] += 1
                continue
            yield topic, msgtype, timestamp, msg
        for topic, (count, first, exc) in undecodable.items():
            self._note(f"{count} messages of {topic} cannot be deserialised (the first at "
                       f"{first} ns: {type(exc).__name__}: {exc})")

    def _rosbags_messages(self, topics: set[str], start_ns: int | None, end_ns: int | None):
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = self._reader.messages(connections=connections, start=start_ns, stop=end_ns)
        last, at_last = None, 0  # where rosbags stopped, for the row-by-row reading
        while True:
            try:
                connection, timestamp, raw = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                where = "at the start" if last is None else f"after {last} ns"
                self._note(f"rosbags stopped reading {where} ({type(exc).__name__}: {exc})")
                if self._open_sqlite():  # the rest of a sqlite3 bag, row by row
                    self._reader.close()
                    self._reader = None
                    for message in self.messages(topics, start_ns, end_ns):  # after rosbags'
                        if last is not None and message[2] < last:
                            continue
                        if message[2] == last and at_last > 0:
                            at_last -= 1
                            continue
                        yield message
                return
            try:
                msg = self._reader.deserialize(raw, connection.msgtype)
            except Exception as exc:
                self._note(f"a message of {connection.topic} at {timestamp} ns cannot be "
                           f"deserialised ({type(exc).__name__}: {exc})")
                continue
            at_last = at_last + 1 if timestamp == last else 1
            last = timestamp
            yield connection.topic, connection.msgtype, timestamp, msg

    def _mcap_rows(self, topics: set[str], start_ns: int | None = None,
                   end_ns: int | None = None) -> Iterator[tuple[int, str, str, bytes]]:
        streams = [_mcap_file_rows(mcap, topics, start_ns, end_ns) for mcap in self._mcaps]
        # the files of a split bag follow each other in time; merged in case they do not
        return streams[0] if len(streams) == 1 else heapq.merge(*streams, key=lambda r: r[0])

    def _sqlite_rows(self, topics: set[str]) -> Iterator[tuple[int, str, str, bytes]]:
        decompress = None
        if self._info.get("compression_mode") == "message":
            import zstandard
            decompress = zstandard.ZstdDecompressor().decompress
        for rows in self._sqlite:
            wanted = {i: t for i, t in rows.topics.items() if t[0] in topics}
            for timestamp, topic_id, data in rows.messages(set(wanted)):
                yield (timestamp, *wanted[topic_id], decompress(data) if decompress else data)

    def _typestore(self):
        """The bag's own message definitions (its MCAP schemas) when it has them all, as
        rosbags reads them; else ROS 2 Jazzy's with vision_msgs (typestore())."""
        if self._store is None:
            self._store = typestore()
            if self._mcaps:
                with contextlib.suppress(Exception):  # a definition rosbags cannot parse
                    self._store = _schema_typestore(self._mcaps)
        return self._store

    def close(self) -> None:
        self._damage = self.damage  # kept: what the files found
        if self._reader is not None:
            self._reader.close()
        for file in [*self._mcaps, *(self._sqlite or [])]:
            file.close()
        self._reader, self._mcaps, self._sqlite = None, [], None

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _mcap_file_rows(mcap, topics: set[str], start_ns: int | None = None,
                    end_ns: int | None = None) -> Iterator[tuple[int, str, str, bytes]]:
    channels = {}
    for c in mcap.channels.values():
        if c.topic in topics:
            schema = mcap.schemas.get(c.schema_id)
            channels[c.id] = (c.topic, schema.name if schema else "?")
    for message in mcap.messages(set(channels), start_ns, end_ns):
        yield (message.log_time, *channels[message.channel_id], message.data)


def _schema_typestore(mcaps):
    """A typestore of the definitions in the MCAP files' schemas (ros2msg, ros2idl)."""
    from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore
    types, separator = {}, "=" * 80 + "\n"
    for mcap in mcaps:
        if any(c.schema_id not in mcap.schemas for c in mcap.channels.values()):
            raise ValueError("a channel without a schema")
        for schema in mcap.schemas.values():
            text = schema.data.decode()
            if schema.encoding == "ros2msg":
                types.update(get_types_from_msg(text, schema.name))
            elif schema.encoding == "ros2idl":
                for part in (text.split(separator)[1:] if text.startswith(f"{separator}IDL: ")
                             else [f"\n{text}"]):
                    types.update(get_types_from_idl(part.split("\n", 1)[1]))
            else:
                raise ValueError(f"schema encoding {schema.encoding}")
    store = get_typestore(Stores.EMPTY)
    store.register(types)
    return store


def _bag_information(path: Path) -> dict:
    """rosbag2's metadata.yaml of a bag folder (its rosbag2_bagfile_information), or {}."""
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return info if isinstance(info, dict) else {}


def _indexed_counts(info: dict) -> dict[str, int]:
    """topic -> messages, as metadata.yaml counts them."""
    counts: dict[str, int] = {}
    for entry in info.get("topics_with_message_count") or []:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            name = entry["topic_metadata"]["name"]
            counts[name] = counts.get(name, 0) + int(entry["message_count"])
    return counts


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
        chunk_size = 2**20  # rosbags' own: a chunk is closed once it holds more

        def write(self, connection, timestamp: int, data) -> None:
            super().write(connection, timestamp, data)
            if self.chunk.bio.tell() > self.chunk_size:
                self.close_chunk()

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
    """A new ROS 2 bag (mcap or sqlite3) of rclpy messages or rosbags objects. An MCAP
    chunk is closed once it holds more than ``chunk_size`` bytes (default 1 MiB): what a
    damaged chunk loses. ``custom_data``: rosbag2's custom_data (who wrote the bag)."""

    def __init__(self, path: str | Path, storage: str = "mcap", chunk_size: int | None = None,
                 custom_data: dict[str, str] | None = None):
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
        for key, value in (custom_data or {}).items():  # in metadata.yaml and the MCAP file
            self._writer.set_custom_data(key, value)
        self._writer.open()
        if chunk_size is not None and storage == "mcap":
            self._writer.storage.chunk_size = chunk_size
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
