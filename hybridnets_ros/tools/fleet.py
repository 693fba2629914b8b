"""``hybridnets fleet``: many bags, every camera of each, through replay's frame path.

Each worker builds the pipeline once and replays bag after bag with :func:`replay` (the
frame path of the node and of ``hybridnets replay``). Per bag it writes, under a temporary
name, the output bag and the bag's part of the index (``frames.parquet`` inside the bag
folder), then renames the folder: a bag is complete exactly when ``DIR/<bag name>/``
exists. So a rerun skips complete bags and redoes partial ones, a worker that dies mid-bag
leaves only a temporary folder behind (the bag is redone), and the merged
``DIR/index.parquet`` holds each frame exactly once. A damaged bag is replayed as far as
it can be read and recorded as ``damaged`` (done, with loss: where, and how many images
were lost); a rerun skips it like a complete one and still reports it. Workers run here
(one, in this process) or as Ray actors (tools.fleet_ray, imported only then).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..pipeline.config import NodeConfig
from ..pipeline.factory import build_pipeline
from .bags import BagError, is_bag
from .replay import bag_cameras, replay

INDEX_NAME = "index.parquet"
SUMMARY_NAME = "summary.json"
PART_NAME = "frames.parquet"  # a bag's rows of the index, inside its output folder
# "NAME:K": the worker exits after K frames of bag NAME in its first attempt (the tests'
# stand-in for a killed process or a lost node).
EXIT_HOOK_ENV = "HYBRIDNETS_FLEET_TEST_EXIT"


# ----------------------------------------------------------------------------- inputs
def find_bags(inputs: Iterable[str | Path]) -> list[Path]:
    """Bags named directly, found in folders (mcap, sqlite3 and ROS 1; a bag folder's own
    files are not bags of their own), or listed one per line in a text file ('#' starts a
    comment; relative paths are relative to the file). Missing ones are kept: they are
    reported as failed."""
    found: dict[Path, None] = {}
    for item in inputs:
        path = Path(item)
        if is_bag(path) or not path.exists():
            found[path] = None
        elif path.is_dir():
            for candidate in sorted(path.rglob("*")):
                if is_bag(candidate) and not _in_bag_folder(candidate, path):
                    found[candidate] = None
        else:
            for line in path.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    listed = Path(line)
                    found[listed if listed.is_absolute() else path.parent / listed] = None
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _in_bag_folder(candidate: Path, root: Path) -> bool:
    """A file or folder within a bag folder under ``root`` (its storage files)."""
    return any((parent / "metadata.yaml").is_file() for parent in candidate.parents
               if parent == root or root in parent.parents)


def bag_names(paths: list[Path]) -> list[str]:
    """An output name per bag: its folder name or file stem, made unique with the parent
    folder's name (then a number) where two bags share one."""
    plain = [p.name if p.is_dir() else p.stem for p in paths]
    names = [f"{path.resolve().parent.name}_{name}" if plain.count(name) > 1 else name
             for path, name in zip(paths, plain)]
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            names[index] = f"{name}_{seen[name]}"
    return names


# ------------------------------------------------------------------------ the index
def index_schema(class_names: tuple[str, ...]):
    import pyarrow as pa
    return pa.schema([
        ("bag", pa.string()), ("camera", pa.string()), ("topic", pa.string()),
        ("stamp_ns", pa.int64()), ("bag_time_ns", pa.int64()),
        *[(f"det_{name}", pa.int32()) for name in class_names],
        ("max_score", pa.float64()), ("nearest_m", pa.float64()),
        ("drivable_fraction", pa.float64()), ("lane_fraction", pa.float64()),
        ("processing_ms", pa.float64()), ("rejected", pa.string())])


def index_row(bag: str, camera, timestamp: int, header, outcome, seconds: float,
              class_names: tuple[str, ...]) -> dict:
    """One image's row: what it found (nothing, with the reason, when it was rejected)."""
    nan = float("nan")
    namespace = camera.image.name.removesuffix("/compressed").rsplit("/", 1)[0].strip("/")
    row = dict(bag=bag, camera=camera.name or namespace, topic=camera.image.name,
               stamp_ns=header.stamp.sec * 10**9 + header.stamp.nanosec, bag_time_ns=timestamp,
               **{f"det_{name}": 0 for name in class_names}, max_score=nan, nearest_m=nan,
               drivable_fraction=nan, lane_fraction=nan, processing_ms=seconds * 1e3,
               rejected=None)
    if outcome.rejected is not None:
        row["rejected"] = f"{outcome.rejected.reason}: {outcome.rejected}"
        return row
    products = outcome.products
    detections = products.result.detections
    counts = np.bincount(detections.classes, minlength=len(class_names)) if len(detections) else ()
    for name, count in zip(class_names, counts):
        row[f"det_{name}"] = int(count)
    if len(detections):
        row["max_score"] = float(np.max(detections.scores))
    if products.contacts is not None and np.any(products.contacts.valid):
        row["nearest_m"] = float(np.min(products.contacts.ranges[products.contacts.valid]))
    row["drivable_fraction"] = float(np.mean(products.surfaces.drivable_mask(products.result)))
    if products.result.lane_mask is not None:
        row["lane_fraction"] = float(np.mean(products.result.lane_mask))
    return row


def write_parquet(table, path: Path) -> None:
    """``table`` to ``path`` atomically (a reader never sees half a file)."""
    import pyarrow.parquet as pq
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def merge_index(out: Path, names: list[str]) -> int:
    """DIR/index.parquet from the parts of the complete bags among ``names``; its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    tables = [pq.read_table(out / name / PART_NAME) for name in names
              if (out / name / PART_NAME).is_file()]
    if not tables:
        return 0
    table = pa.concat_tables(tables, promote_options="permissive")
    write_parquet(table, out / INDEX_NAME)
    return table.num_rows


# --------------------------------------------------------------------------- a worker
@dataclass
class BagJob:
    """One bag for a worker (plain data: it travels to Ray actors)."""

    path: str
    name: str
    out: str
    image_topics: list[str] | None = None
    attempt: int = 1
    exit_after: int | None = None  # the test hook (EXIT_HOOK_ENV)


@dataclass
class BagResult:
    name: str
    path: str
    status: str                  # done | damaged (done, with loss) | skipped | failed
    frames: int = 0              # images processed (rejected ones included)
    seconds: float = 0.0         # wall time in the worker
    error: str | None = None
    worker: str | None = None
    attempts: int = 1
    rejected: int = 0
    notes: list[str] = field(default_factory=list)
    peak_rss_mb: float | None = None  # of the worker process, after the bag
    damage: list[str] = field(default_factory=list)  # what of the bag could not be read, where
    lost: int | None = None      # images its index counts that could not be read (None: unknown)


def peak_rss_mb() -> float | None:
    """This process' peak resident memory (VmHWM), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def complete(out: Path, name: str) -> bool:
    return (out / name / "metadata.yaml").is_file() and (out / name / PART_NAME).is_file()


def set_threads(threads: int | None) -> None:
    """CPU threads of this process' engines: one knob for torch, ONNX Runtime and OpenVINO
    (the backends read torch's), set before the pipeline is built."""
    if threads:
        import torch
        torch.set_num_threads(threads)


class BagWorker:
    """Builds the pipeline once (or takes a built one), then replays bag after bag (``run``)."""

    def __init__(self, config: NodeConfig, threads: int | None = None, name: str = "local",
                 pipeline=None):
        set_threads(threads)
        self.config, self.name = config, name
        self.pipeline = pipeline or build_pipeline(config)
        self.current: str | None = None  # the bag being replayed and its frames so far
        self.frames_done = 0

    def progress(self) -> tuple[str | None, int]:
        return self.current, self.frames_done

    def run(self, job: BagJob, progress: Callable[[int], None] | None = None) -> BagResult:
        out = Path(job.out)
        partial, final = out / f".{job.name}.partial", out / job.name
        shutil.rmtree(partial, ignore_errors=True)  # a previous attempt's remains
        rows: list[dict] = []
        classes = self.pipeline.network.detection_classes
        self.current, self.frames_done = job.name, 0

        def on_frame(camera, timestamp, header, outcome, seconds):
            rows.append(index_row(job.name, camera, timestamp, header, outcome, seconds, classes))
            self.frames_done = len(rows)
            if progress is not None:
                progress(len(rows))
            if job.exit_after is not None and len(rows) >= job.exit_after:
                os._exit(3)  # the test hook: a worker killed mid-bag

        started = time.monotonic()
        result = BagResult(job.name, job.path, "failed", worker=self.name, attempts=job.attempt)
        try:
            summary = replay(Path(job.path), partial, self.pipeline, self.config,
                             image_topics=job.image_topics, on_frame=on_frame,
                             say=lambda text: None)
            if summary.interrupted:
                raise KeyboardInterrupt
            import pyarrow as pa
            write_parquet(pa.Table.from_pylist(rows, schema=index_schema(classes)),
                          partial / PART_NAME)
            shutil.rmtree(final, ignore_errors=True)  # an incomplete one (no index part)
            os.replace(partial, final)
        except (BagError, OSError, ValueError) as exc:
            result.error = str(exc)
        except Exception as exc:  # any other bag-specific failure must not stop the fleet
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        result.seconds = time.monotonic() - started
        result.peak_rss_mb = peak_rss_mb()
        if result.error is None:
            result.status = "damaged" if summary.damage else "done"
            result.frames = len(rows)
            result.rejected = sum(summary.rejected.values())
            result.notes, result.damage, result.lost = summary.notes, summary.damage, summary.lost
        return result


class InProcessPool:
    """One worker in this process: bag after bag."""

    def __init__(self, config: NodeConfig, pipeline):
        self.worker = BagWorker(config, pipeline=pipeline)
        self.workers = 1

    def run(self, jobs: list[BagJob], progress: Callable[[str, int], None]) -> Iterator[BagResult]:
        for job in jobs:
            yield self.worker.run(job, lambda frames, name=job.name: progress(name, frames))

    def close(self) -> None:
        pass


# --------------------------------------------------------------------- the whole run
@dataclass
class FleetReport:
    bags: list[BagResult]
    seconds: float        # the whole run
    work_seconds: float   # from the workers ready to the last bag done
    workers: int
    index_rows: int

    @property
    def failed(self) -> list[BagResult]:
        return [b for b in self.bags if b.status == "failed"]

    @property
    def damaged(self) -> list[BagResult]:
        """Bags read only in part, in this run or (skipped now) an earlier one."""
        return [b for b in self.bags if b.damage and b.status != "failed"]

    def per_worker(self) -> dict[str, dict]:
        """worker -> frames, seconds busy, frames/s and peak memory (bags done in this run)."""
        table: dict[str, dict] = {}
        for bag in self.bags:
            if bag.status not in ("done", "damaged") or bag.worker is None:
                continue
            entry = table.setdefault(bag.worker, dict(frames=0, seconds=0.0, peak_rss_mb=0.0))
            entry["frames"] += bag.frames
            entry["seconds"] += bag.seconds
            entry["peak_rss_mb"] = max(entry["peak_rss_mb"], bag.peak_rss_mb or 0.0)
        for entry in table.values():
            entry["fps"] = entry["frames"] / entry["seconds"] if entry["seconds"] else 0.0
        return table


def exit_hook() -> tuple[str, int] | None:
    """(bag name, frames) from EXIT_HOOK_ENV, if set."""
    value = os.environ.get(EXIT_HOOK_ENV)
    if not value:
        return None
    name, _, frames = value.rpartition(":")
    return name, int(frames)


def image_count(path: Path, image_topics) -> int:
    """Images the bag's chosen cameras hold (0 when unknown); raises BagError."""
    return sum(c.image.count or 0 for c in bag_cameras(path, image_topics))


def run_fleet(paths: list[Path], out: Path, pool_factory: Callable[[], object], *,
              image_topics=None, progress_factory=None) -> FleetReport:
    """Every bag of ``paths`` not complete in ``out`` through the pool ``pool_factory()``
    makes (built only when there is work), then DIR/index.parquet and DIR/summary.json."""
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    names = bag_names(paths)
    previous = _previous_summary(out)
    results: dict[str, BagResult] = {}
    jobs, totals = [], {}
    hook = exit_hook()
    for path, name in zip(paths, names):
        if complete(out, name):
            before = previous.get(name, {})
            results[name] = BagResult(name, str(path), "skipped", frames=before.get("frames", 0),
                                      seconds=before.get("seconds", 0.0),
                                      worker=before.get("worker"),
                                      damage=before.get("damage") or [], lost=before.get("lost"))
            continue
        try:
            totals[name] = image_count(path, image_topics)
        except BagError as exc:
            results[name] = BagResult(name, str(path), "failed", error=str(exc))
            continue
        exit_after = hook[1] if hook and hook[0] == name else None
        jobs.append(BagJob(str(path), name, str(out), image_topics, exit_after=exit_after))
    bar = progress_factory(sum(totals.values())) if progress_factory else None
    done_frames: dict[str, int] = {}

    def progress(name: str, frames: int) -> None:
        if bar is not None:
            bar.update(frames - done_frames.get(name, 0))  # negative when a bag restarts
        done_frames[name] = frames

    workers, work_started = 0, time.monotonic()
    if jobs:
        pool = pool_factory()
        workers, work_started = pool.workers, time.monotonic()
        try:
            for result in pool.run(jobs, progress):
                results[result.name] = result
                progress(result.name, result.frames if result.status != "failed" else 0)
                if bar is not None:
                    finished = [r.status for r in results.values() if r.status != "skipped"]
                    bar.set_postfix_str(f"bags {finished.count('done')} done, "
                                        f"{finished.count('damaged')} damaged, "
                                        f"{finished.count('failed')} failed")
        finally:
            pool.close()
            if bar is not None:
                bar.close()
    work_seconds = time.monotonic() - work_started
    for name in names:  # what killed workers left behind
        shutil.rmtree(out / f".{name}.partial", ignore_errors=True)
    ordered = [results[name] for name in names]
    rows = merge_index(out, names)
    report = FleetReport(ordered, time.monotonic() - started, work_seconds, workers, rows)
    _write_summary(out, report)
    return report


def _previous_summary(out: Path) -> dict[str, dict]:
    try:
        return {b["name"]: b for b in json.loads((out / SUMMARY_NAME).read_text())["bags"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _write_summary(out: Path, report: FleetReport) -> None:
    data = dict(bags=[asdict(b) for b in report.bags], seconds=report.seconds,
                work_seconds=report.work_seconds, workers=report.per_worker(),
                index_rows=report.index_rows)
    temporary = out / f".{SUMMARY_NAME}.tmp"
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, out / SUMMARY_NAME)


def retry(job: BagJob) -> BagJob:
    """The job of a bag whose worker died, for another attempt (no test hook then)."""
    return replace(job, attempt=job.attempt + 1, exit_after=None)


def report_table(report: FleetReport) -> str:
    """The closing table: bags, frames, frames/s overall and per worker, failures."""
    done = [b for b in report.bags if b.status in ("done", "damaged")]
    frames = sum(b.frames for b in done)
    damaged = sum(b.status == "damaged" for b in done)
    lines = [f"bags: {len(report.bags)} ({len(done)} done"
             f"{f' ({damaged} damaged: read in part)' if damaged else ''}, "
             f"{sum(b.status == 'skipped' for b in report.bags)} already complete, "
             f"{len(report.failed)} failed)",
             f"frames: {frames}, {frames / report.work_seconds if report.work_seconds else 0:.2f} "
             f"frames/s with {report.workers} worker{'s' if report.workers != 1 else ''} "
             f"({report.work_seconds:.1f} s; {report.seconds:.1f} s with the start-up)"]
    for name, entry in sorted(report.per_worker().items()):
        lines.append(f"  {name}: {entry['frames']} frames, {entry['fps']:.2f} frames/s busy, "
                     f"peak memory {entry['peak_rss_mb']:.0f} MiB")
    retried = [b for b in report.bags if b.attempts > 1]
    if retried:
        lines.append("redone after a lost worker: " + ", ".join(
            f"{b.name} ({b.attempts} attempts)" for b in retried))
    for bag in report.damaged:
        lost = "how many images were lost is unknown" if bag.lost is None else \
            f"{bag.lost} images lost"
        earlier = " (an earlier run)" if bag.status == "skipped" else ""
        lines.append(f"DAMAGED {bag.name} ({bag.path}){earlier}: {bag.frames} images read, "
                     f"{lost}: {'; '.join(bag.damage)}")
    for bag in report.failed:
        lines.append(f"FAILED {bag.name} ({bag.path}): {bag.error}")
    return "\n".join(lines)
