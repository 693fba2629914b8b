"""The fleet driver's own costs at archive scale (docs/fleet.md, "The driver").

An output folder with N bags done (fake parts: real Parquet files of the index's schema,
ROWS rows each, and a summary.json that lists them, as a run leaves them), then a resume
that does one real bag (index only, in this process): the driver's time (the walk of
frames/, the pre-pass, the summary) and peak memory, against the same resume beside no
bag. ``--no-summary`` also measures the case of a driver killed before its summary (the
records are then read from the parts' footers). Each case runs in a fresh process.

    .venv/bin/python scripts/fleet_driver_bench.py --bags 10000 --work /tmp/fleet-bench
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

PARAMS = """/**:
  ros__parameters:
    input_size: 128
    backend: onnxruntime
    allow_random_weights: true
"""


def make_done_bags(out: Path, bags: int, rows: int, summary: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hybridnets_ros.tools.fleet import FRAMES, RECORD_KEY, SETTINGS_NAME, frame_schema
    schema = frame_schema(("car",))
    table = pa.table({f.name: pa.nulls(rows, f.type) if f.name == "rejected" else
                      pa.array(np.arange(rows) % 7, f.type) if f.type != pa.string() else
                      pa.array([f"archive/day{rows}"] * rows) for f in schema})
    records = []
    for index in range(bags):
        key = f"old/day{index // 100:03d}/drive{index % 100:02d}.mcap"
        record = dict(frames=rows, source=f"/archive/{key}", seconds=1.0, worker="w")
        folder = out / FRAMES / key
        folder.mkdir(parents=True)
        pq.write_table(table.replace_schema_metadata({RECORD_KEY: json.dumps(record)}),
                       folder / "00000-of-00001.parquet")
        records.append(dict(bag=key, source=record["source"], status="done", frames=rows,
                            detections=0, seconds=1.0, workers=["w"], ranges=1, ranges_done=1))
    (out / SETTINGS_NAME).write_text(json.dumps(dict(root=str(out.parent / "archive"))))
    if summary:
        (out / "summary.json").write_text(json.dumps(dict(root=str(out.parent / "archive"),
                                                          bags=records)))


def resume(out: Path, bag: Path) -> None:
    """One bag into ``out`` in this process; prints the driver's figures as JSON."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "test"))
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline
    from hybridnets_ros.tools.fleet import InProcessPool, run_fleet
    config = NodeConfig.from_params_file(out.parent / "params.yaml").with_changes(
        camera_resolution=[])
    pipeline = build_pipeline(config)
    Path("/proc/self/clear_refs").write_text("5")  # the peak from here on (Linux)
    resident = _status_mb("VmRSS")
    started = time.monotonic()
    report = run_fleet([bag], out, lambda: InProcessPool(config, pipeline), outputs=["index"])
    seconds = time.monotonic() - started
    print(json.dumps(dict(seconds=seconds, work_s=report.work_seconds, **report.driver,
                          resident_before_mb=resident, bags=report.totals["bags"],
                          statuses=[b.status for b in report.bags])))


def _status_mb(name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bags", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000, help="rows per fake part")
    parser.add_argument("--work", type=Path, required=True, help="a folder to fill (removed first)")
    parser.add_argument("--resume", nargs=2, metavar=("OUT", "BAG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.resume:
        resume(Path(args.resume[0]), Path(args.resume[1]))
        return
    from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
    from hybridnets_ros.ros.camera_info import camera_info_from_model
    from hybridnets_ros.tools.make_bag import make_bag
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    (args.work / "params.yaml").write_text(PARAMS)
    camera = default_camera(320, 192)
    scene = SyntheticRoad(camera)
    bag = args.work / "archive" / "new" / "drive"
    make_bag([scene.render(i / 10)[0] for i in range(10)], bag, 10.0,
             camera_info_from_model(camera, "camera_optical_frame"), start_ns=10**9)
    cases = {"no bag done": None, f"{args.bags} bags done": True,
             f"{args.bags} bags done, no summary.json": False}
    for name, summary in cases.items():
        out = args.work / f"out-{len(name)}"
        started = time.monotonic()
        if summary is not None:
            make_done_bags(out, args.bags, args.rows, summary)
        made = time.monotonic() - started
        done = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--resume",
                               str(out), str(bag)], capture_output=True, text=True, check=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{name}: resume of one 10-frame bag {figures['seconds']:.2f} s (of which the "
              f"bag {figures['work_s']:.2f} s, walk of frames/ {figures['scan_s']:.2f} s, "
              f"pre-pass {figures['prepass_s']:.2f} s); peak memory during the resume "
              f"{figures['peak_rss_mb']:.0f} MiB, {figures['peak_rss_mb'] - figures['resident_before_mb']:.0f} "
              f"MiB over the {figures['resident_before_mb']:.0f} MiB resident before it (pipeline "
              f"built); summary of {figures['bags']} bags; fake parts made in {made:.0f} s")


if __name__ == "__main__":
    main()
