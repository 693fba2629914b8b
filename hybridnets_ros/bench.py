"""``hybridnets bench``: the whole pipeline on real frames, per stage, for every backend.

A frame runs through a list of named stages (callables over the frame's state), timed one
by one with the device synchronised in between, so per-stage numbers are honest on CUDA
too. The node's own stages (image conversion, bird's-eye grids, message build) are listed
but not wired yet and are reported as not measured. To add one, give its ``Stage`` a
callable that reads and writes ``FrameState`` fields.

Each backend is set up first (export, quantisation, engine build or tracing: reported as
"setup") and warmed up, then timed over ``--frames`` frames cycling over the source.
Outputs are compared with the first fp32 backend run (detections matched one-to-one at
IoU >= 0.5 within a class, mask pixel agreement), so the price of INT8 or fp16 is shown
beside its speed.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

WARMUP_FRAMES = 2
MATCH_IOU = 0.5
SYNTHETIC_FRAMES = 8  # distinct synthetic frames rendered, then cycled


@dataclass
class FrameState:
    """What the stages pass along for one frame."""

    image: Any                         # the frame as it arrives: sensor_msgs/Image or BGR array
    bgr: np.ndarray | None = None      # after image conversion
    tensor: Any = None
    letterbox: Any = None
    raw: Any = None
    result: Any = None
    extras: dict = field(default_factory=dict)  # products of later stages (grids, messages)


@dataclass
class Stage:
    name: str
    run: Callable[[FrameState], None] | None  # None: not measured
    note: str = ""                            # why not measured


# What a deployed node typically publishes per frame (the overlay is drawn only for viewers).
NODE_OUTPUTS = {"detections", "drivable_mask", "lane_mask", "drivable_grid", "lane_grid"}


def ros_available() -> bool:
    try:
        import rclpy  # noqa: F401
        import vision_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def frame_inputs(frames: list[np.ndarray]) -> list:
    """What arrives per frame: a sensor_msgs/Image (bgr8) when ROS is installed, else the
    array itself."""
    if not ros_available():
        return frames
    from std_msgs.msg import Header

    from .ros import messages
    return [messages.image(Header(frame_id="camera_optical_frame"), f, "bgr8") for f in frames]


def pipeline_stages(pipeline) -> list[Stage]:
    """The stages of one frame, in order, from image message in to messages built."""

    def preprocess(state: FrameState) -> None:
        state.tensor, state.letterbox = pipeline.preprocessor(
            state.bgr if state.bgr is not None else state.image)

    def network(state: FrameState) -> None:
        state.raw = pipeline.backend.infer(state.tensor)

    def postprocess(state: FrameState) -> None:
        state.result = pipeline.postprocess(state.raw, state.letterbox)

    if not ros_available():
        note = "ROS 2 Python packages (rclpy, vision_msgs) are not installed"
        return [Stage("image conversion", None, note), Stage("pre-processing", preprocess),
                Stage("network", network), Stage("post-processing", postprocess),
                Stage("bird's-eye grids", None, note), Stage("message build", None, note)]

    from .bev import BevProjector, GridSpec
    from .ros.conversions import image_to_bgr
    from .ros.outputs import build_outputs
    from .synthetic import default_camera

    projectors = {}  # per frame size: the default camera and grid of config/hybridnets.yaml

    def conversion(state: FrameState) -> None:
        state.bgr = image_to_bgr(state.image)

    def grids(state: FrameState) -> None:
        hw = state.bgr.shape[:2]
        if hw not in projectors:
            projectors[hw] = BevProjector(default_camera(hw[1], hw[0]), GridSpec())
        state.extras["projector"] = projectors[hw]
        state.extras["grids"] = projectors[hw].project(state.result.seg_mask)

    def build(state: FrameState) -> None:
        state.extras["messages"] = build_outputs(
            NODE_OUTPUTS, state.image.header, state.bgr, state.result, pipeline.spec.class_names,
            state.extras["projector"], "base_link", grids=state.extras["grids"])

    return [
        Stage("image conversion", conversion),
        Stage("pre-processing", preprocess),
        Stage("network", network),
        Stage("post-processing", postprocess),
        Stage("bird's-eye grids", grids),
        Stage("message build", build),
    ]


@dataclass(frozen=True)
class Variant:
    """One benchmarked configuration, written BACKEND[:PRECISION] on the command line."""

    label: str
    backend: str
    precision: str
    options: tuple = ()

    @classmethod
    def parse(cls, text: str) -> "Variant":
        name, _, precision = text.partition(":")
        precision = precision or "fp32"
        options = {"torch-eager": (("optimize", False),), "torch-cudagraph": (("cuda_graph", True),)}
        if name not in ("torch", "torch-eager", "torch-cudagraph", "onnxruntime", "tensorrt",
                        "torch2trt"):
            raise ValueError(f"unknown backend {name!r} in {text!r}; choose from torch-eager, "
                             "torch, torch-cudagraph, onnxruntime, tensorrt, torch2trt, "
                             "optionally with :fp32, :fp16 or :int8")
        backend = "torch" if name.startswith("torch-") else name
        return cls(f"{name}:{precision}", backend, precision, options.get(name, ()))


def default_variants(device: str) -> list[Variant]:
    """Every configuration worth comparing on ``device`` that can run here."""
    from .backends.registry import missing
    if device.startswith("cuda"):
        wanted = ["torch-eager:fp32", "torch:fp32", "torch:fp16", "torch-cudagraph:fp16",
                  "onnxruntime:fp32", "tensorrt:fp16", "torch2trt:fp16"]
    else:
        wanted = ["torch-eager:fp32", "torch:fp32", "onnxruntime:fp32", "onnxruntime:int8"]
    variants = [Variant.parse(v) for v in wanted]
    return [v for v in variants if not missing(v.backend, device)]


def machine_info(device: str) -> dict:
    """CPU model and flags that matter for speed, threads, GPU, library versions."""
    cpu, flags = platform.processor() or platform.machine(), []
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu in ("", platform.machine(), platform.processor()):
                cpu = value.strip()
            if key.strip() == "flags" and not flags:
                have = set(value.split())
                flags = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                                     "asimd", "asimddp") if f in have]
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "opencv": cv2.__version__}
    for module in ("onnxruntime", "onnx", "tensorrt", "torch2trt"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "unknown")
        except ImportError:
            pass
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        from .engine_cache import gpu_identity
        gpu = gpu_identity(device)
    return {"cpu": cpu, "cpu_flags": flags, "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpu": gpu, "device": device,
            "platform": platform.platform(), "versions": versions}


def load_frames(source: str | None, count: int) -> tuple[list[np.ndarray], str]:
    """The frames to cycle over and a description of where they come from."""
    if source is None:
        from .synthetic import SyntheticRoad, default_camera
        scene = SyntheticRoad(default_camera())
        frames = [scene.render(i / 10.0)[0] for i in range(min(count, SYNTHETIC_FRAMES))]
        return frames, f"built-in synthetic road frames ({len(frames)} distinct, 1280x720)"
    from .sources import expand_sources, read_image
    sources, errors = expand_sources([source])
    images = [s.path for s in sources if s.kind == "image"]
    if not images:
        raise ValueError(f"no images in {source}" + (f": {errors[0]}" if errors else ""))
    frames = [read_image(p) for p in images[:count]]
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    return frames, f"{source} ({len(frames)} images, {', '.join(sizes)})"


def percentile_ms(values: list[float]) -> dict:
    if not values:
        return {"median_ms": None, "p95_ms": None}
    return {"median_ms": round(float(np.median(values)), 3),
            "p95_ms": round(float(np.percentile(values, 95)), 3)}


def match_count(ref, test) -> int:
    """Reference detections matched one-to-one by a same-class detection at IoU >= 0.5."""
    from .nms import box_iou
    if not len(ref) or not len(test):
        return 0
    iou = box_iou(torch.from_numpy(ref.boxes).double(), torch.from_numpy(test.boxes).double()).numpy()
    iou[ref.classes[:, None] != test.classes[None, :]] = 0
    used, matched = set(), 0
    for i in np.argsort(-ref.scores, kind="stable"):
        for j in np.argsort(-iou[i], kind="stable"):
            if iou[i, j] < MATCH_IOU:
                break
            if j not in used:
                used.add(j)
                matched += 1
                break
    return matched


def run_variant(variant: Variant, model, frames: list[np.ndarray], n_frames: int, device: str,
                size: int, calib: str | None,
                synchronize: Callable[[], None]) -> tuple[dict, dict]:
    """Set up one backend, warm it up and time ``n_frames`` frames; returns its record."""
    from .backends import create_backend
    from .pipeline import Pipeline
    from .preprocess import Letterbox

    started = time.monotonic()
    backend = create_backend(variant.backend, model, device=device, precision=variant.precision,
                             calib=calib, input_size=size, source_hw=frames[0].shape[:2],
                             **dict(variant.options))
    for shape in sorted({f.shape[:2] for f in frames}):
        backend.prepare(Letterbox.compute(shape, size, 128).input_hw)
    pipeline = Pipeline(backend, size)
    stages = pipeline_stages(pipeline)
    inputs = frame_inputs(frames)
    for i in range(WARMUP_FRAMES):
        _run_frame(stages, inputs[i % len(frames)], synchronize)
    setup_s = time.monotonic() - started

    times: dict[str, list[float]] = {s.name: [] for s in stages}
    e2e, results = [], {}
    for i in range(n_frames):
        index = i % len(frames)
        t0 = time.perf_counter()
        state, stage_ms = _run_frame(stages, inputs[index], synchronize)
        e2e.append((time.perf_counter() - t0) * 1e3)
        for name, ms in stage_ms.items():
            times[name].append(ms)
        if index not in results:  # outputs of each distinct frame, for the fidelity check
            results[index] = state.result
    record = {
        "description": backend.describe(),
        "setup_s": round(setup_s, 2),
        "stages": {s.name: dict(percentile_ms(times[s.name]), **({"note": s.note} if s.note else {}))
                   for s in stages},
        "network_ms": percentile_ms(times["network"])["median_ms"],
        "e2e_ms": percentile_ms(e2e)["median_ms"],
        "e2e_p95_ms": percentile_ms(e2e)["p95_ms"],
    }
    record["fps"] = round(1e3 / record["e2e_ms"], 2)
    del pipeline, backend
    gc.collect()
    return record, results


def _run_frame(stages: list[Stage], image: np.ndarray, synchronize) -> tuple[FrameState, dict]:
    state = FrameState(image)
    stage_ms = {}
    for stage in stages:
        if stage.run is None:
            continue
        t0 = time.perf_counter()
        stage.run(state)
        synchronize()
        stage_ms[stage.name] = (time.perf_counter() - t0) * 1e3
    return state, stage_ms


def fidelity(reference: dict, results: dict) -> dict:
    ref_total = sum(len(reference[i].detections) for i in reference)
    matched = sum(match_count(reference[i].detections, results[i].detections) for i in reference)
    found = sum(len(results[i].detections) for i in reference)
    agreement = float(np.mean([(reference[i].seg_mask == results[i].seg_mask).mean()
                               for i in reference]))
    return {"detections_reference": ref_total, "detections": found, "detections_matched": matched,
            "matched_fraction": round(matched / ref_total, 4) if ref_total else None,
            "mask_agreement": round(agreement, 5)}


def run_bench(variants: list[Variant], model, frames: list[np.ndarray], n_frames: int,
              device: str, size: int, calib: str | None) -> dict:
    """Run every variant; the returned dict is the --json document (without the header)."""
    from .backends import BackendUnavailable

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    records, reference, reference_label = {}, None, None
    for variant in variants:
        log.info("bench: %s ...", variant.label)
        try:
            record, results = run_variant(variant, model, frames, n_frames, device, size, calib,
                                          synchronize)
        except BackendUnavailable as exc:
            records[variant.label] = {"skipped": str(exc)}
            log.warning("bench: %s skipped: %s", variant.label, exc)
            continue
        if reference is None and variant.precision == "fp32":
            reference, reference_label = results, variant.label
        if reference is not None:
            record["fidelity"] = dict(fidelity(reference, results), reference=reference_label)
        records[variant.label] = record
    return records


def format_table(doc: dict) -> str:
    backends = {k: v for k, v in doc["backends"].items() if "stages" in v}
    names = list(backends)
    skipped = [f"{name}: skipped: {v['skipped']}" for name, v in doc["backends"].items()
               if "skipped" in v]
    if not names:
        return "\n".join(["no backend ran"] + skipped)
    baseline = next((n for n in names if n.startswith("torch-eager:fp32")), names[0])
    rows = [["stage (median / p95 ms)"] + names]
    stage_names = list(next(iter(backends.values()))["stages"])
    for stage in stage_names:
        row = [stage]
        for name in names:
            s = backends[name]["stages"][stage]
            row.append("n/a" if s["median_ms"] is None else f"{s['median_ms']:.1f} / {s['p95_ms']:.1f}")
        rows.append(row)
    rows.append(["end to end"] + [f"{backends[n]['e2e_ms']:.1f} / {backends[n]['e2e_p95_ms']:.1f}"
                                  for n in names])
    rows.append(["frames per second"] + [f"{backends[n]['fps']:.2f}" for n in names])
    rows.append([f"network speed-up vs {baseline}"] + [
        f"{backends[baseline]['network_ms'] / backends[n]['network_ms']:.2f}x" for n in names])
    rows.append(["pipeline overhead on network"] + [
        f"{(backends[n]['e2e_ms'] / backends[n]['network_ms'] - 1) * 100:.1f}%" for n in names])
    rows.append(["setup + warm-up (s)"] + [f"{backends[n]['setup_s']:.1f}" for n in names])
    if any("fidelity" in backends[n] for n in names):
        ref = next(backends[n]["fidelity"]["reference"] for n in names if "fidelity" in backends[n])
        rows.append([f"detections matched vs {ref}"] + [_matched(backends[n]) for n in names])
        rows.append([f"mask agreement vs {ref}"] + [
            f"{backends[n]['fidelity']['mask_agreement'] * 100:.2f}%" if "fidelity" in backends[n]
            else "n/a" for n in names])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name in names:
        lines.append(f"{name}: {backends[name]['description']}")
    notes = {s["note"] for b in backends.values() for s in b["stages"].values() if "note" in s}
    lines += [f"n/a: {note}" for note in sorted(notes)]
    return "\n".join(lines + skipped)


def _matched(record: dict) -> str:
    f = record.get("fidelity")
    if not f:
        return "n/a"
    return f"{f['detections_matched']}/{f['detections_reference']} (+{f['detections'] - f['detections_matched']})"


def main(args) -> int:
    """``hybridnets bench``; ``args`` from the CLI parser."""
    from .weights import build_model, default_weights_path

    if args.threads:
        torch.set_num_threads(args.threads)
    variants = ([Variant.parse(v.strip()) for spec in args.backend for v in spec.split(",") if v.strip()]
                if args.backend else default_variants(args.device))
    frames, source = load_frames(args.source, args.frames)
    weights = Path(args.weights) if args.weights else (
        default_weights_path() if default_weights_path().is_file() else None)
    weights_note = (str(weights) if weights else
                    "random (no checkpoint given: the network's timings hardly depend on weight "
                    "values, eager PyTorch's can through denormal numbers; but random weights flag "
                    "thousands of boxes on some frames, which inflates post-processing and message "
                    "build: pass --weights for representative numbers of those stages and for "
                    "fidelity)")
    model = build_model(weights, random_weights=weights is None)
    with tempfile.TemporaryDirectory(prefix="hybridnets-calib-") as tmp:
        calib = args.calib or args.source
        if calib is None and any(v.precision == "int8" for v in variants):
            for i, frame in enumerate(frames):  # calibrate on the frames being measured
                cv2.imwrite(str(Path(tmp) / f"frame_{i:03d}.png"), frame)
            calib = tmp
        backends = run_bench(variants, model, frames, args.frames, args.device, args.size, calib)
    doc = {"date": time.strftime("%Y-%m-%d"), "machine": machine_info(args.device),
           "source": source, "frames": args.frames, "size": args.size, "weights": weights_note,
           "calibration": (args.calib or args.source or "the synthetic frames")
           if any(v.precision == "int8" for v in variants) else None,
           "backends": backends}
    m = doc["machine"]
    print(f"hybridnets bench: {args.frames} frames from {source}, --size {args.size}")
    print(f"weights: {weights_note}")
    print(f"machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no flags read'}), "
          f"{m['threads']} threads of {m['cpu_count']} CPUs, GPU: {m['gpu'] or 'none used'}; "
          + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    if doc["calibration"]:
        print(f"int8 calibrated on {doc['calibration']}")
    print()
    print(format_table(doc))
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    ran = [v for v in backends.values() if "stages" in v]
    return 0 if ran else 1
