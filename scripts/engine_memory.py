"""What one more image size costs in memory, per backend (docs/benchmarks.md).

For each backend: a pipeline as the node builds it (random HybridNets weights, the engine
for the camera's 1280x720 prepared), then frames of four more sizes, each a new network
input, one after the other, each engine built the way the node builds it (through
pipeline.engines where that exists). The process's RSS after each size shows what a size
costs, and with ``max_engines`` (3 by default) whether evicted engines give memory back.
A fresh engine cache per run: every size is exported and built, as on a first meeting.

    PYTHONPATH=. .venv/bin/python scripts/engine_memory.py --backend torch|onnxruntime|openvino [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

CAMERA = (720, 1280)
# Image sizes giving network inputs 512x640, 640x512, 640x640, 256x640 at input_size 640.
SIZES = [(480, 640), (640, 480), (640, 640), (256, 640)]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure(backend: str, random_model, max_engines: int | None = None) -> dict:
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline
    try:
        from hybridnets_ros.pipeline.engines import EngineBuilds
    except ImportError:  # before engines were built in the background: at the first frame
        EngineBuilds = None

    bound = {} if max_engines is None else {"max_engines": max_engines}
    config = NodeConfig(backend=backend, device="cpu", **bound)
    pipeline = build_pipeline(config, model=random_model)
    builds = EngineBuilds(pipeline) if EngineBuilds else None
    pipeline(np.zeros((*CAMERA, 3), np.uint8))
    trail = [("1280x720 (camera)", round(rss_mb()))]
    for hw in SIZES:
        bgr = np.zeros((*hw, 3), np.uint8)
        if builds is not None:
            builds.split([bgr])
            while builds.current:
                time.sleep(0.05)
        pipeline(bgr)
        trail.append((f"{hw[1]}x{hw[0]}", round(rss_mb())))
    steps = [b - a for (_, a), (_, b) in zip(trail, trail[1:])]
    return {"backend": pipeline.backend.describe(), "max_engines": getattr(
        config, "max_engines", 3), "engines_kept": len(getattr(pipeline.backend, "engines", ())),
        "rss_mb": trail, "step_mb": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="openvino",
                        help="one per process: RSS counts everything the process ever held")
    parser.add_argument("--max-engines", type=int, help="the node's max_engines (default 3)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["HYBRIDNETS_CACHE"] = cache
        from hybridnets_ros.core.models.hybridnets.weights import load_module
        result = measure(args.backend, load_module(random_weights=True), args.max_engines)
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
