"""One MCAP file read chunk by chunk, past damage, with the ``mcap`` library's records.

rosbags and the mcap library's own readers stop at the first bad byte: a recording that was
cut off has no summary (no chunk index, no end magic), and one bad chunk ends the read
although the summary still indexes every chunk after it. Here each chunk is read on its own:

- with a summary, at the offsets of its chunk indexes: a chunk that is not where its index
  says, fails its CRC, does not decompress or does not parse is skipped, and the next read;
- without one (a truncated file, an unreadable summary, an unchunked file), record by record
  from the start; at a record that does not parse, reading resumes at the next record that
  parses as a chunk.

What was skipped is in ``damage``: byte offsets, chunk numbers and the reason.
"""
from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import yaml
from mcap.data_stream import ReadDataStream
from mcap.opcode import Opcode
from mcap.reader import SeekingReader
from mcap.records import (Attachment, AttachmentIndex, Channel, Chunk, ChunkIndex, DataEnd,
                          Footer, Header, Message, MessageIndex, Metadata, MetadataIndex, Schema,
                          Statistics, SummaryOffset)
from mcap.stream_reader import breakup_chunk

MAGIC = b"\x89MCAP0\r\n"
_RECORD_HEAD = struct.Struct("<BQ")       # opcode, length of the record's content
_CHUNK_HEAD = struct.Struct("<QQQII")     # start, end, uncompressed size, crc, compression length
_COMPRESSIONS = (b"", b"zstd", b"lz4")
# Opcodes a record may have: the specification's 0x01-0x0F and the private 0x80-0xFF.
_VALID_OPCODES = set(range(0x01, 0x10)) | set(range(0x80, 0x100))
_RECORDS = {Opcode.HEADER: Header, Opcode.FOOTER: Footer, Opcode.SCHEMA: Schema,
            Opcode.CHANNEL: Channel, Opcode.MESSAGE_INDEX: MessageIndex,
            Opcode.CHUNK_INDEX: ChunkIndex, Opcode.ATTACHMENT: Attachment,
            Opcode.ATTACHMENT_INDEX: AttachmentIndex, Opcode.STATISTICS: Statistics,
            Opcode.METADATA: Metadata, Opcode.METADATA_INDEX: MetadataIndex,
            Opcode.SUMMARY_OFFSET: SummaryOffset, Opcode.DATA_END: DataEnd}


class NotMcap(Exception):
    """The file does not start with the MCAP magic."""


class McapChunks:
    """The channels and messages of one MCAP file; what could not be read is in ``damage``.

    ``counts`` (messages per channel id) and ``start_ns``/``end_ns`` come from the summary's
    statistics: what the file held when it was written, None without them."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        try:
            self.size = self.path.stat().st_size
            if self.size < len(MAGIC) or self._file.read(len(MAGIC)) != MAGIC:
                raise NotMcap(f"{self.path}: not an MCAP file (no MCAP magic at its start)")
            self._data = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        self._damage: dict[int, str] = {}  # byte offset -> what is wrong there (reads repeat)
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, Channel] = {}
        self.counts: dict[int, int] | None = None
        self.start_ns = self.end_ns = None
        self.truncated = self._data[-len(MAGIC):] != MAGIC or self.size < 2 * len(MAGIC)
        self._chunks: list[ChunkIndex] | None = None  # None: read record by record
        self._numbers: dict[int, int] = {}  # chunk offset -> its number in the file (1-based)
        summary = self._summary()
        if summary is not None:
            self.schemas, self.channels = dict(summary.schemas), dict(summary.channels)
            if summary.statistics is not None:
                self.counts = dict(summary.statistics.channel_message_counts)
                self.start_ns = summary.statistics.message_start_time
                self.end_ns = summary.statistics.message_end_time
            if summary.chunk_indexes:
                self._chunks = sorted(summary.chunk_indexes, key=lambda c: c.chunk_start_offset)
                self._numbers = {c.chunk_start_offset: n for n, c in enumerate(self._chunks, 1)}
        if self._chunks is None:
            for _ in self._stream(None):  # the channels, defined in the records themselves
                pass

    @property
    def damage(self) -> list[str]:
        return [f"{self.path.name}: {what}" for _, what in sorted(self._damage.items())]

    @property
    def indexed(self) -> bool:
        """Read through its summary's chunk index (chunks skipped by time and channel)."""
        return self._chunks is not None

    def _note(self, offset: int, what: str) -> None:
        self._damage.setdefault(offset, what)

    def _summary(self):
        if self.truncated:
            return None  # noted where the records end (_stream)
        try:
            self._file.seek(0)
            return SeekingReader(self._file).get_summary()
        except Exception as exc:  # any garbage: the mcap library raises many kinds
            self._note(self.size, f"its summary is unreadable ({_why(exc)}): read record by "
                                  "record")
            return None

    def messages(self, channel_ids: set[int], start_ns: int | None = None,
                 end_ns: int | None = None) -> Iterator[Message]:
        """The messages of ``channel_ids`` logged in [start_ns, end_ns) (None: no bound): in
        log time order with a chunk index, which also skips the chunks outside the window
        or without those channels; else in the file's order (each chunk's in log time
        order), read from the start."""
        low, high = -1 if start_ns is None else start_ns, 2**64 if end_ns is None else end_ns
        if self._chunks is None:
            for message in self._stream(channel_ids):
                if low <= message.log_time < high:
                    yield message
            return
        wanted = [c for c in self._chunks_of(channel_ids)
                  if c.message_end_time >= low and c.message_start_time < high]
        for group in _overlapping(wanted):  # chunks whose times interleave are merged
            batch = []
            for index in group:
                batch += [(r.log_time, index.chunk_start_offset, i, r)
                          for i, r in enumerate(self._chunk_messages(index, channel_ids))
                          if low <= r.log_time < high]
            batch.sort(key=lambda item: item[:3])
            for *_, message in batch:
                yield message

    def latest_before(self, channel_ids: set[int], time_ns: int) -> dict[int, Message]:
        """channel id -> its last message logged before ``time_ns``: with a chunk index, the
        chunks read backwards from there (a calibration sent once at the start of a long
        recording costs one chunk, not the recording); else a read from the start."""
        found: dict[int, Message] = {}
        if self._chunks is None:
            for message in self.messages(channel_ids, end_ns=time_ns):
                found[message.channel_id] = message
            return found
        for index in sorted(self._chunks_of(channel_ids), key=lambda c: -c.message_end_time):
            if index.message_start_time >= time_ns:
                continue
            if found.keys() == channel_ids and \
                    index.message_end_time < min(m.log_time for m in found.values()):
                break  # every chunk left ends before what was found
            for message in self._chunk_messages(index, channel_ids):
                if message.log_time < time_ns and (message.channel_id not in found or
                                                   message.log_time >= found[message.channel_id].log_time):
                    found[message.channel_id] = message
        return found

    def _chunks_of(self, channel_ids: set[int]) -> list[ChunkIndex]:
        """The indexed chunks that may hold ``channel_ids`` (all, without message indexes),
        by start time."""
        return [c for c in sorted(self._chunks, key=lambda c: (c.message_start_time,
                                                               c.chunk_start_offset))
                if not c.message_index_offsets or channel_ids & c.message_index_offsets.keys()]

    def _chunk_messages(self, index: ChunkIndex, channel_ids: set[int]) -> list[Message]:
        return [r for r in self._indexed_chunk(index, self._numbers[index.chunk_start_offset])
                if isinstance(r, Message) and r.channel_id in channel_ids]

    def rosbag2_metadata(self) -> dict:
        """The rosbag2 metadata that rosbag2 and rosbags write into an MCAP file (its
        'rosbag2' metadata record: metadata.yaml's content), or {}."""
        try:
            self._file.seek(0)
            reader = SeekingReader(self._file)
            for record in reader.iter_metadata():
                if record.name == "rosbag2":
                    data = yaml.safe_load(record.metadata.get("serialized_metadata", ""))
                    info = (data or {}).get("rosbag2_bagfile_information", data)
                    return info if isinstance(info, dict) else {}
        except Exception:  # a damaged or foreign file: no metadata to tell
            pass
        return {}

    def _indexed_chunk(self, index: ChunkIndex, number: int) -> list:
        start, length = index.chunk_start_offset, index.chunk_length
        where = (f"chunk {number} of {len(self._chunks)} (at byte {start}, messages "
                 f"{index.message_start_time / 1e9:.3f}-{index.message_end_time / 1e9:.3f} s)")
        if start + length > self.size or length < _RECORD_HEAD.size:
            self._note(start, f"{where} lies beyond the end of the file ({self.size} bytes); "
                              "skipped")
            return []
        opcode, content = _RECORD_HEAD.unpack_from(self._data, start)
        if opcode != Opcode.CHUNK or content != length - _RECORD_HEAD.size:
            self._note(start, f"{where}: no chunk record where the index puts it; skipped")
            return []
        try:
            return _chunk_records(self._data[start + _RECORD_HEAD.size:start + length])
        except Exception as exc:  # a damaged chunk: CRC, decompression or its records
            self._note(start, f"{where}: {_why(exc)}; skipped")
            return []

    def _stream(self, channel_ids: set[int] | None) -> Iterator[Message]:
        """Record by record from the start, resuming at the next chunk after damage; with
        ``channel_ids`` None it only learns the schemas and channels."""
        position, chunks = len(MAGIC), 0
        while position < self.size:
            opcode, length = self._head(position)
            end = position + _RECORD_HEAD.size + length
            if opcode is None:
                problem = "not a record"
            elif end > self.size:
                problem = f"its length ({length} bytes) runs past the end of the file"
            else:
                body = self._data[position + _RECORD_HEAD.size:end]
                try:
                    records = _chunk_records(body) if opcode == Opcode.CHUNK else \
                        _record(opcode, body)
                    problem = None
                except Exception as exc:  # garbage where a record should be
                    problem = _why(exc)
            if problem is None:
                if opcode in (Opcode.DATA_END, Opcode.FOOTER):
                    break  # the summary follows: read already, or unreadable
                chunks += opcode == Opcode.CHUNK
                yield from self._take(records, channel_ids)
                position = end
                continue
            resume = self._next_chunk(position + 1)
            what = f"chunk {chunks + 1}" if opcode == Opcode.CHUNK else "record"
            if resume is not None:
                self._note(position, f"bytes {position}-{resume} unreadable ({what} at byte "
                                     f"{position}: {problem}); read on from the chunk at "
                                     f"byte {resume}")
                position = resume
                continue
            if self.truncated and opcode is not None and end > self.size:
                self._note(position, f"truncated at byte {self.size} of an MCAP file (no end "
                                     f"magic): {what} at byte {position} is cut off")
            else:
                self._note(position, f"bytes {position}-{self.size} unreadable ({what} at "
                                     f"byte {position}: {problem})")
            return
        if self.truncated:
            self._note(self.size, f"truncated at byte {self.size} of an MCAP file (no end "
                                  "magic) after its last complete record")

    def _head(self, position: int) -> tuple[int | None, int]:
        """(opcode, content length) of the record at ``position``; opcode None when no
        record can start there."""
        if position + _RECORD_HEAD.size > self.size:
            return (self._data[position] if self._data[position] in _VALID_OPCODES else None), 0
        opcode, length = _RECORD_HEAD.unpack_from(self._data, position)
        return (opcode if opcode in _VALID_OPCODES else None), length

    def _take(self, records, channel_ids: set[int] | None) -> Iterator[Message]:
        for record in records:
            if isinstance(record, Schema):
                self.schemas[record.id] = record
            elif isinstance(record, Channel):
                self.channels[record.id] = record
            elif isinstance(record, Message) and channel_ids is not None \
                    and record.channel_id in channel_ids:
                yield record

    def _next_chunk(self, start: int) -> int | None:
        """The offset of the next record from ``start`` on that parses as a chunk header."""
        position = start
        while (position := self._data.find(b"\x06", position)) != -1:
            if self._chunk_header_fits(position):
                return position
            position += 1
        return None

    def _chunk_header_fits(self, position: int) -> bool:
        fixed = position + _RECORD_HEAD.size + _CHUNK_HEAD.size
        if fixed > self.size:
            return False
        _, length = _RECORD_HEAD.unpack_from(self._data, position)
        start, end, _, _, name_length = _CHUNK_HEAD.unpack_from(self._data,
                                                                fixed - _CHUNK_HEAD.size)
        if name_length > 4 or start > end or fixed + name_length + 8 > self.size \
                or position + _RECORD_HEAD.size + length > self.size:
            return False
        if self._data[fixed:fixed + name_length] not in _COMPRESSIONS:
            return False
        (data_length,) = struct.unpack_from("<Q", self._data, fixed + name_length)
        return length == _CHUNK_HEAD.size + name_length + 8 + data_length

    def close(self) -> None:
        self._data.close()
        self._file.close()


def _chunk_records(body: bytes) -> list:
    """The schemas, channels and messages of a chunk record's content (CRC checked when the
    writer stored one), its messages in log time order."""
    chunk = Chunk.read(ReadDataStream(BytesIO(body)))
    if len(chunk.data) != len(body) - (_CHUNK_HEAD.size + len(chunk.compression) + 8):
        raise ValueError("its compressed data is shorter than its header says")
    records = breakup_chunk(chunk, validate_crc=True)
    return sorted(records, key=lambda r: r.log_time if isinstance(r, Message) else -1)


def _record(opcode: int, body: bytes) -> list:
    """A record outside chunks, parsed (garbage seldom parses): schemas, channels and
    messages (an unchunked file) are kept, the others carry no messages."""
    stream = ReadDataStream(BytesIO(body))
    if opcode == Opcode.MESSAGE:
        return [Message.read(stream, len(body))]
    record = _RECORDS[opcode].read(stream) if opcode in _RECORDS else None  # else private
    return [record] if isinstance(record, (Schema, Channel)) else []


def _overlapping(chunks: list[ChunkIndex]) -> Iterator[list[ChunkIndex]]:
    """Runs of chunks (sorted by start time) whose time ranges overlap."""
    group: list[ChunkIndex] = []
    end = 0
    for chunk in chunks:
        if group and chunk.message_start_time > end:
            yield group
            group = []
        group.append(chunk)
        end = max(end, chunk.message_end_time) if len(group) > 1 else chunk.message_end_time
    if group:
        yield group


def _why(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
