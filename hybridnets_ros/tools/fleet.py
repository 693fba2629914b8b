"""``hybridnets fleet``: an archive of bags, every camera of each, through replay's frame path.

A bag's identity is its path relative to the archive root (``--root``, recorded in the
output folder by its first run): the same in every run, whatever else is passed and in
whatever order. The output folder DIR holds, per bag ``<key>``:

- ``DIR/frames/<key>/<k>-of-<n>.parquet``: its rows of the frame index, one part per time
  range (work unit) of the bag; the part is the range's commit point and carries its record
  (frames, seconds, damage, ...) in its Parquet metadata;
- ``DIR/detections/<key>/<k>-of-<n>.parquet``: one row per detection;
- ``DIR/bags/<key>/``: the output bag (``--outputs``), a rosbag2 split bag with one MCAP file
  per range (``<stem>_<k>.mcap``), whose metadata.yaml is written when every range is done.

``frames/`` and ``detections/`` are Parquet datasets that pyarrow.dataset and DuckDB read
as they are, covering every bag done under DIR by any run: nothing is merged. A bag is
complete when all n parts of its frame index exist. Workers write a range under
``DIR/.work/<token>/`` and move it into place (bag file, detections, then the frame part);
the token is the range's lease (``DIR/.work/leases/``), checked before the move, so a range
has one writer even when a worker thought lost still runs. ``DIR/fleet.lock`` keeps a
second run off DIR, ``DIR/fleet.json`` records the root. ``DIR/summary.json`` (cumulative:
every bag seen, with its source and status) is rewritten at the end of every run, however
it ends.

Workers run here (one, in this process) or as Ray actors (tools.fleet_ray, imported only
then).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import yaml

from ..pipeline.config import NodeConfig
from ..pipeline.factory import build_pipeline
from ..ros.outputs import BY_NAME, enabled_outputs, planner_outputs
from .bags import BagError, BagReader, is_bag
from .replay import WRITER_KEY, cameras_of, replay, uncalibrated_images

SUMMARY_NAME = "summary.json"
SETTINGS_NAME = "fleet.json"  # what names the bags: the archive root of DIR's first run
LOCK_NAME = "fleet.lock"
FRAMES, DETECTIONS, BAGS, WORK = "frames", "detections", "bags", ".work"
RECORD_KEY = b"hybridnets_fleet"  # a frame part's Parquet metadata: the range's record
PART = re.compile(r"(\d{5})-of-(\d{5})\.parquet")
DEFAULT_RANGE_S = 600.0
# Images before a range that go through the frame path unwritten, so that tracks are
# established when the range starts (tracks end after track_max_missed frames unmatched).
WARMUP_S = 3.0
# Track ids of range k start at k * TRACK_ID_STRIDE in the index: unique within a bag.
TRACK_ID_STRIDE = 1 << 32
OUTPUT_SETS = ("index", "bags", "all")
# errno of a write that --out cannot take: the run stops (exit status 2), no bag is blamed.
OUTPUT_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class FleetError(Exception):
    """A problem with the run's set-up (the root, the output folder): nothing was done."""


class OutLocked(FleetError):
    """Another run holds the output folder."""


# ----------------------------------------------------------------------------- inputs
def find_bags(inputs: Iterable[str | Path], exclude: Path | None = None
              ) -> tuple[list[Path], list[str]]:
    """Bags named directly, found in folders (mcap, sqlite3 and ROS 1; a bag folder's own
    files are not bags of their own), or listed one per line in a text file ('#' starts a
    comment; relative paths are relative to the file), and notes. Missing ones are kept:
    they are reported as failed. Nothing under ``exclude`` (the output folder) is taken."""
    found: dict[Path, None] = {}
    notes: list[str] = []
    skip = Path(os.path.abspath(exclude)) if exclude is not None else None

    def excluded(path: Path) -> bool:
        if skip is not None and (Path(os.path.abspath(path)) == skip
                                 or skip in Path(os.path.abspath(path)).parents):
            note = f"{skip} (--out) is inside the inputs: nothing in it is an input"
            if note not in notes:
                notes.append(note)
            return True
        return False

    for item in inputs:
        path = Path(item)
        if is_bag(path) or not path.exists():
            if not excluded(path):
                found[path] = None
        elif path.is_dir():
            for bag in _bags_under(path, excluded):
                found[bag] = None
        else:
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    listed = Path(line)
                    listed = listed if listed.is_absolute() else path.parent / listed
                    if not excluded(listed):
                        found[listed] = None
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values()), notes


def _bags_under(folder: Path, excluded: Callable[[Path], bool]) -> Iterator[Path]:
    """The bags under ``folder`` in name order; bag folders and excluded ones not entered."""
    for current, dirs, files in os.walk(folder):
        here = Path(current)
        keep = []
        for name in sorted(dirs):
            child = here / name
            if excluded(child):
                continue
            if is_bag(child):
                yield child
            else:
                keep.append(name)
        dirs[:] = keep
        for name in sorted(files):
            if is_bag(here / name):
                yield here / name


def bag_key(path: Path, root: Path) -> str:
    """The bag's identity: its path relative to ``root`` (symbolic links not followed);
    ValueError when it is not under ``root``."""
    absolute = Path(os.path.abspath(path))
    if absolute == root:
        return absolute.name
    return absolute.relative_to(root).as_posix()


def choose_root(given: str | Path | None, recorded: str | None) -> tuple[Path, str | None]:
    """The archive root of this run and a note: ``given`` (--root), else the one DIR was
    first run with, else / (the bags' absolute paths). A root other than the recorded one
    would rename every bag done, so it is refused while the recorded one exists."""
    if given is None:
        return Path(recorded or "/"), None
    root = Path(os.path.abspath(given))
    if recorded is None or Path(recorded) == root:
        return root, None
    if Path(recorded).exists():
        raise FleetError(f"--root {root} differs from the root this output folder was made "
                         f"with ({recorded}): the bags done there would be done again under "
                         f"other names; use --root {recorded} or another --out")
    return root, f"the archive root moved: {recorded} (gone) -> {root}"


# --------------------------------------------------------------------- the output folder
@dataclass(frozen=True)
class Layout:
    out: Path

    def part(self, kind: str, key: str, index: int, count: int) -> Path:
        return self.out / kind / key / f"{index:05d}-of-{count:05d}.parquet"

    def bag(self, key: str) -> Path:
        return self.out / BAGS / key

    @property
    def work(self) -> Path:
        return self.out / WORK

    def lease(self, piece: "Piece") -> Path:
        digest = hashlib.sha1(piece.key.encode()).hexdigest()[:16]
        return self.work / "leases" / f"{digest}-{piece.index:05d}-of-{piece.count:05d}"


def scan_parts(layout: Layout) -> dict[str, dict[int, set[int]]]:
    """key -> {n: the ranges k of n whose frame part exists}: one walk of DIR/frames."""
    found: dict[str, dict[int, set[int]]] = {}
    base = layout.out / FRAMES
    for current, _, files in os.walk(base):
        key = Path(current).relative_to(base).as_posix()
        for name in files:
            match = PART.fullmatch(name)
            if match:
                found.setdefault(key, {}).setdefault(int(match[2]), set()).add(int(match[1]))
    return found


def complete_count(ranges: dict[int, set[int]] | None) -> int | None:
    """n when every range k of n is done (the bag is complete), else None."""
    for count, done in (ranges or {}).items():
        if len(done) == count and done == set(range(count)):
            return count
    return None


class OutLock:
    """DIR/fleet.lock: one run per output folder. An flock on the file (released by the
    kernel when the holder dies, also over NFS), with the holder's host and pid in it for
    the message a second run gives; a lock left by a dead run is simply taken."""

    def __init__(self, out: Path):
        self.path = out / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Takes the lock; returns a note when a run that died left it (its holder)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_fd(fd)
            os.close(fd)
            raise OutLocked(f"another hybridnets fleet run holds {self.path.parent} "
                            f"({_holder(holder)}); wait for it or use another --out") from None
        previous = _read_fd(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(dict(host=socket.gethostname(), pid=os.getpid(),
                                      since=time.strftime("%Y-%m-%d %H:%M:%S"))).encode(), 0)
        self.fd = fd
        return f"took over the lock of a run that ended without releasing it " \
               f"({_holder(previous)})" if previous else None

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)  # never removed: a waiting run could lock a stale inode
            os.close(self.fd)
            self.fd = None


def _read_fd(fd: int) -> str:
    return os.pread(fd, 4096, 0).decode(errors="replace").strip()


def _holder(text: str) -> str:
    try:
        data = json.loads(text)
        return f"host {data['host']}, pid {data['pid']}, since {data['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def output_full(exc: BaseException) -> OSError | None:
    """The OSError in ``exc``'s chain that says --out cannot take more (disk full, quota,
    file too large, read-only), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in OUTPUT_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


# ------------------------------------------------------------------------ the tables
# The frame index's ego-lane columns (from the road geometry, core.road_geometry.EgoLane).
EGO_COLUMNS = ("width_m", "center_offset_m", "curvature_1pm")
# Built for the index whether or not the bag gets it: the ego lane's columns.
INDEXED = frozenset({"road_geometry"})


def frame_schema(class_names: tuple[str, ...]):
    import pyarrow as pa
    return pa.schema([
        ("bag", pa.string()), ("source", pa.string()), ("camera", pa.string()),
        ("topic", pa.string()), ("stamp_ns", pa.int64()), ("bag_time_ns", pa.int64()),
        *[(f"det_{name}", pa.int32()) for name in class_names],
        ("max_score", pa.float64()), ("nearest_m", pa.float64()),
        ("drivable_fraction", pa.float64()), ("lane_fraction", pa.float64()),
        *[(name, pa.float64()) for name in EGO_COLUMNS], ("lane_valid", pa.bool_()),
        ("processing_ms", pa.float64()), ("rejected", pa.string())])


def detection_schema():
    import pyarrow as pa
    return pa.schema([
        ("bag", pa.string()), ("source", pa.string()), ("camera", pa.string()),
        ("stamp_ns", pa.int64()), ("track_id", pa.int64()), ("class_name", pa.string()),
        ("score", pa.float32()), ("x1", pa.float32()), ("y1", pa.float32()),
        ("x2", pa.float32()), ("y2", pa.float32()), ("x_m", pa.float64()),
        ("y_m", pa.float64()), ("distance_m", pa.float64())])


class IndexParts:
    """A range's rows of the frame index and of the detections table, gathered per frame
    as numpy arrays and joined once when the range is done."""

    def __init__(self, key: str, source: str, class_names: tuple[str, ...], track_offset: int):
        self.key, self.source, self.class_names = key, source, class_names
        self.track_offset = track_offset
        self.frames: dict[str, list] = {name: [] for name in (
            "camera", "topic", "stamp_ns", "bag_time_ns", "max_score", "nearest_m",
            "drivable_fraction", "lane_fraction", *EGO_COLUMNS, "lane_valid", "processing_ms",
            "rejected")}
        self.counts: list[np.ndarray | None] = []  # per frame: detections per class
        self.per_frame: list[int] = []  # detections of each frame (camera, stamp: its row's)
        self.detections: dict[str, list[np.ndarray]] = {name: [] for name in (
            "track_id", "class_id", "score", "boxes", "xy")}

    def __len__(self) -> int:
        return len(self.counts)

    def add(self, camera, timestamp: int, header, outcome, seconds: float) -> None:
        """One image (``replay``'s on_frame): its frame row and detection rows."""
        nan = float("nan")
        name = camera.name or camera.image.name.removesuffix("/compressed").rsplit("/", 1)[0] \
            .strip("/")
        stamp = header.stamp.sec * 10**9 + header.stamp.nanosec
        row = self.frames
        row["camera"].append(name)
        row["topic"].append(camera.image.name)
        row["stamp_ns"].append(stamp)
        row["bag_time_ns"].append(timestamp)
        row["processing_ms"].append(seconds * 1e3)
        if outcome.rejected is not None:  # nothing known of it: nulls, not zeros
            for column in ("max_score", "nearest_m", "drivable_fraction", "lane_fraction",
                           *EGO_COLUMNS, "lane_valid"):
                row[column].append(None)
            row["rejected"].append(f"{outcome.rejected.reason}: {outcome.rejected}")
            self.counts.append(None)
            self.per_frame.append(0)
            return
        products = outcome.products
        detections = products.result.detections
        count = len(detections)
        self.counts.append(np.bincount(detections.classes, minlength=len(self.class_names)))
        xy = np.full((count, 2), np.nan)
        if products.contacts is not None:
            valid = products.contacts.valid
            xy[valid] = products.contacts.points[valid, :2]
        distance = np.hypot(xy[:, 0], xy[:, 1])
        row["max_score"].append(float(np.max(detections.scores)) if count else nan)
        row["nearest_m"].append(float(np.nanmin(distance)) if np.isfinite(distance).any() else nan)
        row["drivable_fraction"].append(
            float(np.mean(products.surfaces.drivable_mask(products.result))))
        lane = products.result.lane_mask
        row["lane_fraction"].append(nan if lane is None else float(np.mean(lane)))
        ego = products.road.ego if products.road is not None else None
        for column in EGO_COLUMNS:  # NaN: no valid ego lane this frame
            row[column].append(nan if ego is None or not ego.valid
                               else float(getattr(ego, column)))
        row["lane_valid"].append(None if ego is None else bool(ego.valid))  # null: no camera
        row["rejected"].append(None)
        self.per_frame.append(count)
        if count:
            det = self.detections
            ids = products.track_ids
            det["track_id"].append(np.full(count, -1, np.int64) if ids is None
                                   else np.asarray(ids, np.int64) + self.track_offset)
            det["class_id"].append(detections.classes)
            det["score"].append(detections.scores)
            det["boxes"].append(detections.boxes)
            det["xy"].append(xy)

    def tables(self, record: dict):
        """(frames, detections) pyarrow tables; ``record`` goes into the frames' metadata."""
        import pyarrow as pa
        n = len(self.counts)
        columns = dict(bag=[self.key] * n, source=[self.source] * n, **{
            k: self.frames[k] for k in ("camera", "topic", "stamp_ns", "bag_time_ns")})
        rejected = np.array([c is None for c in self.counts], bool)
        counts = np.stack([np.zeros(len(self.class_names), np.int64) if c is None else c
                           for c in self.counts]) if n else np.zeros((0, len(self.class_names)))
        for index, name in enumerate(self.class_names):
            columns[f"det_{name}"] = pa.array(counts[:, index].astype(np.int32), mask=rejected)
        for name in ("max_score", "nearest_m", "drivable_fraction", "lane_fraction",
                     *EGO_COLUMNS, "lane_valid", "processing_ms", "rejected"):
            columns[name] = self.frames[name]
        schema = frame_schema(self.class_names).with_metadata({RECORD_KEY: json.dumps(record)})
        frames = pa.Table.from_pydict(columns, schema=schema)
        if not self.detections["score"]:
            return frames, detection_schema().empty_table()
        det = {k: np.concatenate(v) for k, v in self.detections.items()}
        m, boxes, xy = len(det["score"]), det["boxes"], det["xy"]
        track = det["track_id"]
        per_frame = np.asarray(self.per_frame)
        detections = pa.Table.from_pydict(dict(
            bag=[self.key] * m, source=[self.source] * m,
            camera=pa.array(np.repeat(np.asarray(self.frames["camera"], object), per_frame),
                            pa.string()),
            stamp_ns=np.repeat(np.asarray(self.frames["stamp_ns"], np.int64), per_frame),
            track_id=pa.array(track, mask=track < 0),  # null: tracking off
            class_name=pa.array(np.asarray(self.class_names, object)[det["class_id"]],
                                pa.string()),
            score=det["score"].astype(np.float32),
            x1=boxes[:, 0].astype(np.float32), y1=boxes[:, 1].astype(np.float32),
            x2=boxes[:, 2].astype(np.float32), y2=boxes[:, 3].astype(np.float32),
            x_m=xy[:, 0], y_m=xy[:, 1], distance_m=np.hypot(xy[:, 0], xy[:, 1])),
            schema=detection_schema())
        return frames, detections


def write_parquet(table, path: Path) -> None:
    """``table`` to ``path`` atomically (a reader never sees half a file)."""
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def part_record(path: Path) -> dict:
    """The record a frame part carries (its Parquet footer only)."""
    import pyarrow.parquet as pq
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata.get(RECORD_KEY, b"{}"))


# ---------------------------------------------------------------------- output choices
def resolve_outputs(spec: Iterable[str], config: NodeConfig) -> frozenset[str] | None:
    """The outputs written to a bag for ``--outputs`` (None: no bag, the index only):
    ``bags`` what a deployed node publishes (planner_outputs), ``all`` every output the
    configuration enables, or output names; ``index`` adds nothing (always written)."""
    enabled = enabled_outputs(config)
    chosen: set[str] = set()
    for item in spec:
        if item == "bags":
            chosen |= planner_outputs(config.adapter) & enabled
        elif item == "all":
            chosen |= enabled
        elif item != "index":
            chosen.add(item)
    return frozenset(chosen) if chosen else None


def check_outputs(spec: list[str]) -> None:
    """ValueError naming an unknown ``--outputs`` item."""
    unknown = [item for item in spec if item not in OUTPUT_SETS and item not in BY_NAME]
    if unknown:
        raise ValueError(f"unknown --outputs {', '.join(unknown)}: choose from "
                         f"{', '.join(OUTPUT_SETS)} or output names "
                         f"({', '.join(o for o in BY_NAME if BY_NAME[o].per_frame)})")


# ------------------------------------------------------------------------ work units
@dataclass
class Piece:
    """A time range of a bag: what a worker does at once (plain data: it travels to Ray
    actors). ``window`` None: the whole bag."""

    key: str
    source: str
    out: str
    index: int
    count: int
    window: tuple[int | None, int | None] | None
    outputs: list[str]
    image_topics: list[str] | None = None
    token: str = ""
    attempt: int = 1

    @property
    def name(self) -> str:
        return self.key if self.count == 1 else f"{self.key} [{self.index + 1}/{self.count}]"


@dataclass
class PieceResult:
    key: str
    index: int
    count: int
    status: str                   # done | failed | superseded (its lease went to another)
    frames: int = 0               # images processed (rejected ones included)
    rejected: int = 0
    detections: int = 0
    seconds: float = 0.0          # wall time in the worker
    worker: str | None = None
    attempt: int = 1
    error: str | None = None
    fatal: bool = False           # --out cannot take more: the run stops
    notes: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    images_read: int = 0
    peak_rss_mb: float | None = None


def plan_windows(span: tuple[int, int] | None, range_s: float | None
                 ) -> list[tuple[int | None, int | None] | None]:
    """The time ranges of a bag spanning ``span`` (first, last message ns): equal ranges
    of at most ``range_s`` seconds, the first open at its start and the last at its end
    (what the index does not count is still read); [None] for one range."""
    if span is None or not range_s:
        return [None]
    first, last = span
    count = max(1, math.ceil((last - first + 1) / (range_s * 1e9)))
    if count == 1:
        return [None]
    bounds = [first + round(k * (last + 1 - first) / count) for k in range(count + 1)]
    return [(None if k == 0 else bounds[k], None if k == count - 1 else bounds[k + 1])
            for k in range(count)]


def grant(piece: Piece) -> Piece:
    """``piece`` with a new token, written as its lease: the one attempt allowed to move
    its output into place (an earlier one, if it still runs, finds the lease gone)."""
    piece = replace(piece, token=uuid.uuid4().hex)
    path = Layout(Path(piece.out)).lease(piece)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{piece.token}")
    temporary.write_text(piece.token)
    os.replace(temporary, path)
    return piece


def retry(piece: Piece) -> Piece:
    """The piece of a worker that died, for another attempt (with a new lease)."""
    return grant(replace(piece, attempt=piece.attempt + 1))


def peak_rss_mb() -> float | None:
    """This process' peak resident memory (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def set_threads(threads: int | None) -> None:
    """CPU threads of this process' engines: one knob for torch, ONNX Runtime and OpenVINO
    (the backends read torch's), set before the pipeline is built."""
    if threads:
        import torch
        torch.set_num_threads(threads)


def _stem(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return Path(name).stem if Path(name).suffix in (".mcap", ".db3", ".bag") else name


class BagWorker:
    """Builds the pipeline once (or takes a built one), then replays range after range."""

    def __init__(self, config: NodeConfig, threads: int | None = None, name: str = "local",
                 pipeline=None):
        set_threads(threads)
        self.config, self.name = config, name
        self.pipeline = pipeline or build_pipeline(config)
        self.current: str | None = None  # the token of the range being replayed
        self.frames_done = 0

    def progress(self) -> tuple[str | None, int]:
        return self.current, self.frames_done

    def run(self, piece: Piece, progress: Callable[[int], None] | None = None) -> PieceResult:
        layout = Layout(Path(piece.out))
        work = layout.work / piece.token
        result = PieceResult(piece.key, piece.index, piece.count, "failed", worker=self.name,
                             attempt=piece.attempt)
        started = time.monotonic()
        self.current, self.frames_done = piece.token, 0
        try:
            work.mkdir(parents=True)
            (work / "owner.json").write_text(json.dumps(dict(  # who writes here (tests, people)
                host=socket.gethostname(), pid=os.getpid(), worker=self.name, bag=piece.key,
                range=piece.index, of=piece.count)))
            self._replay(piece, layout, work, result, progress, started)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # any bag-specific failure must not stop the fleet
            full = output_full(exc)
            result.status, result.fatal = "failed", full is not None
            result.error = f"cannot write {piece.out}: {full.strerror or full}" if full else \
                str(exc) if isinstance(exc, (BagError, OSError, ValueError)) else \
                f"{type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(work, ignore_errors=True)
            self.current = None
        result.seconds = time.monotonic() - started
        result.peak_rss_mb = peak_rss_mb()
        return result

    def _replay(self, piece: Piece, layout: Layout, work: Path, result: PieceResult,
                progress: Callable[[int], None] | None, started: float) -> None:
        """The range into ``work``, then (holding its lease) moved into place."""
        outputs = resolve_outputs(piece.outputs, self.config)
        classes = self.pipeline.adapter.detection_classes
        index = IndexParts(piece.key, piece.source, classes, piece.index * TRACK_ID_STRIDE)
        name = f"{_stem(piece.key)}_{piece.index}"

        def on_frame(*args):
            index.add(*args)
            self.frames_done = len(index)
            if progress is not None:
                progress(len(index))

        summary = replay(Path(piece.source), None if outputs is None else work / name,
                         self.pipeline, self.config, image_topics=piece.image_topics,
                         on_frame=on_frame, say=lambda text: None,
                         outputs=outputs or frozenset(), compress_images=True,
                         indexed=INDEXED & enabled_outputs(self.config),
                         window=piece.window, warmup_ns=int(WARMUP_S * 1e9),
                         custom_data={WRITER_KEY: "fleet"})
        if summary.interrupted:
            raise KeyboardInterrupt
        result.frames, result.rejected = len(index), sum(summary.rejected.values())
        result.notes, result.damage = summary.notes, summary.damage
        result.images_read = summary.images_read
        result.detections = sum(len(v) for v in index.detections["score"])
        result.seconds = time.monotonic() - started
        record = {f.name: getattr(result, f.name) for f in fields(result)
                  if f.name not in ("status", "fatal", "error", "peak_rss_mb")}
        record.update(source=piece.source, outputs=piece.outputs, window=piece.window)
        frames, detections = index.tables(record)
        write_parquet(frames, work / "frames.parquet")
        write_parquet(detections, work / "detections.parquet")
        if layout.lease(piece).read_text() != piece.token:
            result.status = "superseded"  # given to another worker: its output counts
            return
        if outputs is not None:  # the range's bag file beside the others' (its metadata
            folder = layout.bag(piece.key)  # is inside it too: finalize_bag reads it there)
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(work / name / f"{name}.mcap", folder / f"{name}.mcap")
        for kind in (DETECTIONS, FRAMES):  # the frame part last: the range's commit
            target = layout.part(kind, piece.key, piece.index, piece.count)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work / f"{kind}.parquet", target)
        result.status = "done"


def finalize_bag(layout: Layout, key: str, count: int) -> None:
    """The output bag's metadata.yaml from its ranges' MCAP files (a rosbag2 split bag:
    one file per range, each carrying its own metadata); nothing to do for an index-only
    bag or one already finalized."""
    from .mcap_chunks import McapChunks
    folder = layout.bag(key)
    if not folder.is_dir() or (folder / "metadata.yaml").is_file():
        return
    infos = []
    for k in range(count):
        mcap = McapChunks(folder / f"{_stem(key)}_{k}.mcap")
        try:
            infos.append(mcap.rosbag2_metadata())
        finally:
            mcap.close()
    temporary = folder / ".metadata.yaml.tmp"
    temporary.write_text(yaml.safe_dump({"rosbag2_bagfile_information": merge_metadata(infos)},
                                        sort_keys=False))
    os.replace(temporary, folder / "metadata.yaml")


def merge_metadata(infos: list[dict]) -> dict:
    """rosbag2 metadata of one bag made of the files of ``infos`` (each a one-file bag)."""
    merged = dict(infos[0])
    files = [f for info in infos for f in info["files"]]
    timed = [f for f in files if f["message_count"]]
    start = min((f["starting_time"]["nanoseconds_since_epoch"] for f in timed), default=0)
    stop = max((f["starting_time"]["nanoseconds_since_epoch"] + f["duration"]["nanoseconds"]
                for f in timed), default=0)
    topics: dict[str, dict] = {}
    for info in infos:
        for entry in info["topics_with_message_count"]:
            name = entry["topic_metadata"]["name"]
            if name in topics:
                topics[name]["message_count"] += entry["message_count"]
            else:
                topics[name] = dict(entry)
    merged.update(relative_file_paths=[p for info in infos for p in info["relative_file_paths"]],
                  files=files, starting_time={"nanoseconds_since_epoch": start},
                  duration={"nanoseconds": stop - start},
                  message_count=sum(info["message_count"] for info in infos),
                  topics_with_message_count=list(topics.values()))
    return merged


class InProcessPool:
    """One worker in this process: range after range."""

    def __init__(self, config: NodeConfig, pipeline):
        self.worker = BagWorker(config, pipeline=pipeline)
        self.workers = 1

    def run(self, pieces: list[Piece], progress: Callable[[str, int, int], None]
            ) -> Iterator[PieceResult]:
        for piece in pieces:
            piece = grant(piece)
            yield self.worker.run(piece, lambda n, p=piece: progress(p.key, p.index, n))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------- the whole run
@dataclass
class BagResult:
    """A bag as this run leaves it; summary.json keeps the last one of every bag."""

    bag: str                     # its key: path relative to the archive root
    source: str                  # the path it was read from
    status: str                  # done | damaged | skipped (complete before) | failed |
    #                              ignored (not an input) | partial (ranges left to do)
    frames: int = 0
    rejected: int = 0
    detections: int = 0
    seconds: float = 0.0         # worker time
    error: str | None = None
    workers: list[str] = field(default_factory=list)
    attempts: int = 1            # of its most tried range
    ranges: int = 1
    ranges_done: int = 0
    notes: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # what of it could not be read, where
    lost: int | None = None      # images its index counts that could not be read
    images_indexed: int | None = None
    images_read: int = 0
    outputs: list[str] = field(default_factory=list)
    earlier_status: str | None = None  # skipped: done or damaged, in an earlier run

    @property
    def damaged(self) -> bool:
        return bool(self.damage) and self.status in ("done", "damaged", "skipped")

    def add(self, piece: PieceResult | dict) -> None:
        """A done range's figures (a PieceResult, or a part's record)."""
        get = piece.get if isinstance(piece, dict) else lambda k, d=None: getattr(piece, k, d)
        self.frames += get("frames", 0)
        self.rejected += get("rejected", 0)
        self.detections += get("detections", 0)
        self.seconds += get("seconds", 0.0) or 0.0
        self.attempts = max(self.attempts, get("attempt", 1))
        worker = get("worker")
        if worker and worker not in self.workers:
            self.workers.append(worker)
        self.notes += [n for n in get("notes", []) if n not in self.notes]
        self.damage += get("damage", [])
        self.ranges_done += 1
        self.images_read += get("images_read", 0)

    def finish(self) -> None:
        """Done or damaged, with what was lost, once every range is in."""
        self.status = "damaged" if self.damage else "done"
        if self.damage and self.images_indexed is not None:
            self.lost = max(0, self.images_indexed - self.images_read)


@dataclass
class FleetReport:
    bags: list[BagResult]        # this run's inputs
    seconds: float               # the whole run
    work_seconds: float          # from the workers ready to the last range done
    workers: int
    per_worker: dict[str, dict]
    interrupted: bool = False
    stopped: str | None = None   # why the run stopped early (--out full, ...)
    notes: list[str] = field(default_factory=list)
    driver: dict = field(default_factory=dict)  # pre-pass and scan seconds, peak memory
    totals: dict = field(default_factory=dict)  # every bag under --out

    @property
    def failed(self) -> list[BagResult]:
        return [b for b in self.bags if b.status == "failed"]

    @property
    def damaged(self) -> list[BagResult]:
        """Bags read only in part, in this run or (skipped now) an earlier one."""
        return [b for b in self.bags if b.damaged]


def run_fleet(paths: list[Path], out: Path, pool_factory: Callable[[], object], *,
              root: str | Path | None = None, image_topics=None, outputs=("bags",),
              range_s: float | None = DEFAULT_RANGE_S, progress_factory=None,
              notes: Iterable[str] = ()) -> FleetReport:
    """Every bag of ``paths`` not complete in ``out``, range by range, through the pool
    ``pool_factory()`` makes (built only when there is work). Raises OutLocked or
    FleetError before any work; else summary.json is written however the run ends."""
    started = time.monotonic()
    layout = Layout(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = OutLock(out)
        lock_note = lock.acquire()
    except OSError as exc:
        raise FleetError(f"cannot write --out {out}: {exc.strerror or exc}") from None
    run = _Run(layout, list(notes) + ([lock_note] if lock_note else []))
    try:
        previous = _load_summary(out)
        settings = _load_json(out / SETTINGS_NAME)
        root_path, root_note = choose_root(root, settings.get("root", previous.get("root")))
        if root_note:
            run.notes.append(root_note)
        keys = {}
        for path in paths:
            try:
                keys[bag_key(path, root_path)] = path
            except ValueError:
                raise FleetError(f"{path} is not under the archive root {root_path} (--root)"
                                 ) from None
        if settings.get("root") != str(root_path):  # before any bag is named by it
            try:
                _write_json(out / SETTINGS_NAME, dict(settings, root=str(root_path)))
            except OSError as exc:
                raise FleetError(f"cannot write --out {out}: {exc.strerror or exc}") from None
        run.root = root_path
        run.start(previous, keys, image_topics, list(outputs), range_s)
        run.work(pool_factory, progress_factory)
    except KeyboardInterrupt:
        run.interrupted = True
    except OSError as exc:  # the driver's own writes (bag metadata, clean-up) into --out
        if output_full(exc) is None:
            raise
        run.stopped = f"cannot write {out}: {exc.strerror or exc}"
    finally:
        try:
            run.close(time.monotonic() - started)
        finally:
            lock.release()
    return run.report


class _Run:
    """One run's state: the bags, the ranges to do, what came back."""

    def __init__(self, layout: Layout, notes: list[str]):
        self.layout, self.notes = layout, notes
        self.root: Path | None = None
        self.bags: dict[str, BagResult] = {}      # this run's inputs
        self.records: dict[str, dict] = {}        # summary.json's bags, every run's
        self.pending: dict[str, set[int]] = {}    # key -> ranges not done yet
        self.pieces: list[Piece] = []
        self.per_worker: dict[str, dict] = {}
        self.interrupted, self.stopped = False, None
        self.workers, self.work_seconds = 0, 0.0
        self.driver: dict = {}
        self.report: FleetReport | None = None

    def start(self, previous: dict, keys: dict[str, Path], image_topics, outputs,
              range_s) -> None:
        shutil.rmtree(self.layout.work, ignore_errors=True)  # no writer is left: the lock
        started = time.monotonic()
        parts = scan_parts(self.layout)
        self.driver["scan_s"] = time.monotonic() - started
        self.records = {b["bag"]: b for b in previous.get("bags", []) if "bag" in b}
        for key, record in list(self.records.items()):  # done bags whose parts are gone
            if record.get("status") in ("done", "damaged") and complete_count(parts.get(key)) \
                    is None:
                del self.records[key]
        for key in parts:  # complete bags the summary lacks (a killed driver)
            count = complete_count(parts[key])
            if count is not None and self.records.get(key, {}).get("status") not in (
                    "done", "damaged"):
                self.records[key] = asdict(self._from_parts(key, count))
        started = time.monotonic()
        for key, path in keys.items():
            count = complete_count(parts.get(key))
            if count is not None:
                record = self.records[key]
                finalize_bag(self.layout, key, count)
                self.bags[key] = _result(record, status="skipped", source=str(path),
                                         earlier_status=record["status"])
                continue
            self._plan(key, path, parts.get(key, {}), image_topics, outputs, range_s)
        self.driver["prepass_s"] = time.monotonic() - started

    def _from_parts(self, key: str, count: int) -> BagResult:
        """A complete bag's result from its parts' records."""
        result = None
        for k in range(count):
            record = part_record(self.layout.part(FRAMES, key, k, count))
            if result is None:
                result = BagResult(key, record.get("source", ""), "done", ranges=count,
                                   outputs=record.get("outputs", []))
            result.add(record)
        result.finish()
        return result

    def _plan(self, key: str, path: Path, ranges: dict[int, set[int]], image_topics,
              outputs, range_s) -> None:
        result = BagResult(key, str(path), "partial", outputs=outputs)
        self.bags[key] = result
        try:
            with BagReader(path) as reader:
                writer = reader.custom_data().get(WRITER_KEY)
                if writer:
                    result.status = "ignored"
                    result.notes.append(f"written by hybridnets {writer}: an output, not an "
                                        "input")
                    return
                topics = reader.topics()
                cameras = cameras_of(reader, image_topics)
                skipped = uncalibrated_images(topics, cameras) if not image_topics else []
                if skipped:
                    result.notes.append("image topics without a CameraInfo beside them, not "
                                        f"taken for cameras: {', '.join(skipped)}")
                counts = [c.image.count for c in cameras]
                result.images_indexed = None if None in counts else sum(counts)
                windows = plan_windows(reader.time_range(), range_s)
        except BagError as exc:
            result.status, result.error = "failed", str(exc)
            return
        count = len(windows)
        result.ranges = count
        done = set()
        for k in sorted(ranges.get(count, ())):  # ranges of an earlier run, if still valid
            record = part_record(self.layout.part(FRAMES, key, k, count))
            if record.get("outputs") == outputs and record.get("window") == (
                    list(windows[k]) if windows[k] else None):
                result.add(record)
                done.add(k)
        self._clear(key, count, done)
        self.pending[key] = set(range(count)) - done
        self.pieces += [Piece(key, str(path), str(self.layout.out), k, count, windows[k],
                              outputs, image_topics) for k in sorted(self.pending[key])]

    def _clear(self, key: str, count: int, keep: set[int]) -> None:
        """A bag's parts and range files other than the done ranges ``keep`` of ``count``."""
        names = {f"{k:05d}-of-{count:05d}" for k in keep}
        for kind in (FRAMES, DETECTIONS):
            folder = self.layout.out / kind / key
            for path in folder.glob("*-of-*.parquet") if folder.is_dir() else ():
                if path.name.removesuffix(".parquet") not in names:
                    path.unlink()
        bag = self.layout.bag(key)
        done_files = {f"{_stem(key)}_{k}.mcap" for k in keep}
        for path in bag.glob("*.mcap") if bag.is_dir() else ():
            if path.name not in done_files:
                path.unlink()
        (bag / "metadata.yaml").unlink(missing_ok=True)

    def work(self, pool_factory, progress_factory) -> None:
        total = sum((self.bags[p.key].images_indexed or 0) / p.count for p in self.pieces)
        bar = progress_factory(round(total)) if progress_factory and self.pieces else None
        frames: dict[tuple[str, int], int] = {}

        def progress(key: str, index: int, done: int) -> None:
            if bar is not None:
                bar.update(done - frames.get((key, index), 0))  # negative: a range restarts
            frames[(key, index)] = done

        if not self.pieces:
            return
        pool = pool_factory()
        self.workers, work_started = pool.workers, time.monotonic()
        try:
            for result in pool.run(self.pieces, progress):
                progress(result.key, result.index, result.frames if result.status == "done" else 0)
                self._take(result)
                if bar is not None:
                    states = [b.status for b in self.bags.values()]
                    bar.set_postfix_str(f"bags {states.count('done')} done, "
                                        f"{states.count('damaged')} damaged, "
                                        f"{states.count('failed')} failed")
                if self.stopped:
                    break
        finally:
            self.work_seconds = time.monotonic() - work_started
            pool.close()
            if bar is not None:
                bar.close()

    def _take(self, piece: PieceResult) -> None:
        bag = self.bags[piece.key]
        if piece.status == "superseded":
            return
        if piece.worker and piece.status == "done":
            entry = self.per_worker.setdefault(piece.worker, dict(frames=0, seconds=0.0,
                                                                  peak_rss_mb=0.0))
            entry["frames"] += piece.frames
            entry["seconds"] += piece.seconds
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], piece.peak_rss_mb or 0.0)
        if piece.status != "done":
            if piece.fatal:
                self.stopped = piece.error
            else:
                bag.status, bag.error = "failed", (f"range {piece.index + 1} of {piece.count}: "
                                                   if piece.count > 1 else "") + piece.error
                bag.attempts = max(bag.attempts, piece.attempt)
            return
        bag.add(piece)
        self.pending[piece.key].discard(piece.index)
        if not self.pending[piece.key] and bag.status != "failed":
            try:
                finalize_bag(self.layout, piece.key, piece.count)
            except OSError as exc:
                if output_full(exc) is None:
                    raise
                self.stopped = f"cannot write {self.layout.out}: {exc.strerror or exc}"
                return
            bag.finish()

    def close(self, seconds: float) -> None:
        """summary.json and the report, with what is known however the run ended."""
        if self.root is None:  # interrupted before anything was known
            self.report = FleetReport([], seconds, 0.0, 0, {}, self.interrupted,
                                      notes=self.notes)
            return
        shutil.rmtree(self.layout.work, ignore_errors=True)
        for bag in self.bags.values():
            if bag.status == "partial" and (self.interrupted or self.stopped):
                bag.notes.append(f"{bag.ranges_done} of {bag.ranges} ranges done when the run "
                                 f"{'was interrupted' if self.interrupted else 'stopped'}")
            if bag.status != "skipped":
                self.records[bag.bag] = asdict(bag)
        for entry in self.per_worker.values():
            entry["fps"] = entry["frames"] / entry["seconds"] if entry["seconds"] else 0.0
        self.driver["peak_rss_mb"] = peak_rss_mb()
        records = list(self.records.values())
        totals = dict(bags=len(records),
                      complete=sum(r["status"] in ("done", "damaged") for r in records),
                      damaged=sum(r["status"] == "damaged" for r in records),
                      failed=sum(r["status"] == "failed" for r in records),
                      frames=sum(r["frames"] for r in records if r["status"] in ("done", "damaged")),
                      detections=sum(r.get("detections", 0) for r in records
                                     if r["status"] in ("done", "damaged")))
        self.report = FleetReport(list(self.bags.values()), seconds, self.work_seconds,
                                  self.workers, self.per_worker, self.interrupted,
                                  self.stopped, self.notes, self.driver, totals)
        data = dict(root=str(self.root), bags=records, totals=totals, run=dict(
            bags={b.bag: b.status for b in self.report.bags}, seconds=seconds,
            work_seconds=self.work_seconds, workers=self.per_worker,
            interrupted=self.interrupted, stopped=self.stopped, notes=self.notes,
            driver=self.driver))
        try:
            _write_json(self.layout.out / SUMMARY_NAME, data)
        except OSError as exc:
            message = f"cannot write {SUMMARY_NAME}: {exc.strerror or exc}"
            self.report.stopped = self.report.stopped or message
            print(f"hybridnets fleet: {message}", file=sys.stderr)


def _result(record: dict, **changes) -> BagResult:
    names = {f.name for f in fields(BagResult)}
    return replace(BagResult(**{k: v for k, v in record.items() if k in names}), **changes)


def _load_summary(out: Path) -> dict:
    return _load_json(out / SUMMARY_NAME)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    """``data`` to ``path`` atomically."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(temporary, path)


def report_table(report: FleetReport) -> str:
    """The closing table: bags, frames, frames/s overall and per worker, failures."""
    bags = report.bags
    done = [b for b in bags if b.status in ("done", "damaged")]
    frames = sum(b.frames for b in done)
    damaged, skipped, failed, ignored, partial = (
        sum(b.status == s for b in bags)
        for s in ("damaged", "skipped", "failed", "ignored", "partial"))
    lines = [f"bags: {len(bags)} ({len(done)} done"
             f"{f' ({damaged} damaged: read in part)' if damaged else ''}, "
             f"{skipped} already complete, {failed} failed"
             f"{f', {ignored} not inputs' if ignored else ''}"
             f"{f', {partial} partly done' if partial else ''})",
             f"frames: {frames}, {frames / report.work_seconds if report.work_seconds else 0:.2f} "
             f"frames/s with {report.workers} worker{'s' if report.workers != 1 else ''} "
             f"({report.work_seconds:.1f} s; {report.seconds:.1f} s with the start-up)"]
    for name, entry in sorted(report.per_worker.items()):
        lines.append(f"  {name}: {entry['frames']} frames, {entry['fps']:.2f} frames/s busy, "
                     f"peak memory {entry['peak_rss_mb']:.0f} MiB")
    totals = report.totals
    if totals:
        lines.append(f"index: {totals['complete']} complete bags, {totals['frames']} frames, "
                     f"{totals['detections']} detections under --out")
    retried = [b for b in bags if b.attempts > 1 and b.status != "skipped"]
    if retried:
        lines.append("redone after a lost worker: " + ", ".join(
            f"{b.bag} ({b.attempts} attempts)" for b in retried))
    for note in report.notes:
        lines.append(f"note: {note}")
    for bag in bags:
        if bag.status == "ignored":
            lines.append(f"IGNORED {bag.bag} ({bag.source}): {'; '.join(bag.notes)}")
    for bag in report.damaged:
        lost = "how many images were lost is unknown" if bag.lost is None else \
            f"{bag.lost} images lost"
        earlier = " (an earlier run)" if bag.status == "skipped" else ""
        lines.append(f"DAMAGED {bag.bag} ({bag.source}){earlier}: {bag.frames} images read, "
                     f"{lost}: {'; '.join(bag.damage)}")
    for bag in report.failed:
        lines.append(f"FAILED {bag.bag} ({bag.source}): {bag.error}")
    if report.stopped:
        lines.append(f"STOPPED: {report.stopped}")
    if report.interrupted:
        lines.append("INTERRUPTED: the index holds every range done; a rerun does the rest")
    return "\n".join(lines)
