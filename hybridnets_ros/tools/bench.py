"""``hybridnets bench``: the node's frame path on real frames, per stage, for every backend.

Each frame goes through the same :class:`FrameProcessor` as the node and replay (image
message -> conversion -> pre-processing -> network -> post-processing -> 3D and tracks ->
bird's-eye grids -> messages), which reports each stage's time (the pipeline synchronises
CUDA between stages, so the numbers are honest there too). The opt-in outputs (road
geometry, the Nav2 semantic layer's) are timed apart, on the fastest exact engine.

Every backend is set up first (export, quantisation, engine build or tracing: reported as
"setup") and warmed up; then all are timed over ``frames`` frames cycling over the source,
taking turns frame by frame, so that a machine whose speed drifts slows them alike.
Each row also gives the network's FLOPs per frame (``torch.utils.flop_counter``, 2 per
multiply-add), the rate it ran them at and that rate's share of an fp32 GEMM ceiling
measured in the same run on the same threads: how far each engine is from the machine's
own limit. On a CPU, the exact fp32 engines' network times are recorded as this CPU's
measurement, which ``auto`` follows from then on (backends.engine_choice).

Outputs are compared with the first fp32 backend run (detections matched one-to-one at
IoU >= 0.5 within a class, mask pixel agreement), so the price of INT8 or fp16 is shown
beside its speed. Backends that cannot run here are reported before any model is built.

The variants come from the network's adapter (``--model``): its default backends
(``ModelAdapter.bench_backends``), each on every path it compares (``bench_paths``: e.g.
an exact and a fast pre-processing); the fidelity compares each with the first fp32 run:
detections, class-map agreement and, for depth, the share of pixels within 1 cm and the
median error.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from std_msgs.msg import Header

from ..backends import BackendUnavailable
from ..backends import engine_choice
from ..backends.registry import BACKENDS, PRECISIONS, choose_auto, missing
from ..backends.cpu import cpu_name, isa_limits, speed_flags
from ..backends.onnx_export import cached_onnx
from ..core.nms import box_iou
from ..core.sources import expand_sources, read_image
from ..core.synthetic import SyntheticRoad, default_camera
from ..pipeline.config import NodeConfig
from ..pipeline.factory import build_pipeline, load_module, resolve_device
from ..pipeline.pipeline import device_synchronizer
from ..ros import messages
from ..ros.camera_info import camera_info_from_model
from ..ros.frame import FrameProcessor
from ..ros.outputs import NEEDS_CONFIDENCE, OUTPUTS, planner_outputs
from .layer_profile import PROFILED, format_layers, profile_layers

log = logging.getLogger(__name__)

WARMUP_FRAMES = 2
MATCH_IOU = 0.5
SYNTHETIC_FRAMES = 8  # distinct synthetic frames rendered, then cycled
# FrameProcessor's timing keys -> the table's stage names, in path order
STAGES = {"conversion": "image conversion", "preprocess": "pre-processing",
          "network": "network", "postprocess": "post-processing",
          "objects": "3D and tracks", "grids": "bird's-eye grids", "messages": "message build"}
TORCH_VARIANTS = {"torch-eager": (("optimize", False),), "torch-cudagraph": (("cuda_graph", True),)}
# The planner's outputs that a node builds only for a subscriber of its own kind: road
# geometry, and the Nav2 semantic layer's confidence and points. The frame path's overhead
# (the table) is over the others; these are timed apart (opt_in_costs), on one engine.
OPT_IN = {"road geometry": frozenset(o.name for o in OUTPUTS if o.needs_road),
          "Nav2 semantic layer (confidence, points)": NEEDS_CONFIDENCE | {"segmentation_points"}}


@dataclass(frozen=True)
class Variant:
    """One benchmarked configuration, written BACKEND[:PRECISION] on the command line."""

    label: str
    backend: str
    precision: str
    options: tuple = ()
    settings: tuple = ()  # configuration changes of this run, e.g. (("input_scale", 0.5),)

    @classmethod
    def parse(cls, text: str) -> "Variant":
        name, _, precision = text.partition(":")
        precision = precision or "fp32"
        names = tuple(TORCH_VARIANTS) + BACKENDS
        if name not in names:
            raise ValueError(f"unknown backend {name!r} in {text!r}; choose from "
                             f"{', '.join(names)}, optionally with :{', :'.join(PRECISIONS)}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r} in {text!r}; choose from "
                             f"{', '.join(PRECISIONS)}")
        backend = "torch" if name in TORCH_VARIANTS else name
        return cls(f"{name}:{precision}", backend, precision, TORCH_VARIANTS.get(name, ()))


def path_variants(variants: list[Variant], config: NodeConfig) -> list[Variant]:
    """Each variant on every path the network compares (ModelAdapter.bench_paths) that
    runs it, the exact one first; a network with one path keeps the variants as they are."""
    return [replace(v, label=v.label + path.suffix, settings=tuple(path.settings.items()))
            for path in config.adapter.bench_paths(config) for v in variants
            if path.backends is None or v.label in path.backends]


def default_variants(device: str, config: NodeConfig) -> list[Variant]:
    """Every configuration of the network worth comparing on ``device`` that runs here."""
    variants = [Variant.parse(v) for v in config.adapter.bench_backends(device)]
    return [v for v in variants if not missing(v.backend, device)
            and not (v.label == "openvino:bf16" and openvino_bf16_unsupported())]


def openvino_bf16_unsupported() -> str | None:
    """Why OpenVINO bf16 cannot run on this CPU (None: it can)."""
    from ..backends.openvino_backend import bf16_unsupported, import_openvino
    return bf16_unsupported(import_openvino().Core())


def machine_info(device: str) -> dict:
    """CPU model and flags that matter for speed, threads, GPU, library versions."""
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "opencv": cv2.__version__}
    for module in ("onnxruntime", "onnx", "openvino", "nncf", "tensorrt", "torch2trt"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "unknown")
        except ImportError:
            pass
    gpu = None
    if device.startswith("cuda") and torch.cuda.is_available():
        from ..backends.engine_cache import gpu_identity
        gpu = gpu_identity(device)
    return {"cpu": cpu_name(), "cpu_flags": speed_flags(), "isa_limits": isa_limits(),
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "gpu": gpu, "device": device,
            "platform": platform.platform(), "versions": versions}


def load_frames(source: str | None, count: int) -> tuple[list[np.ndarray], str]:
    """The frames to cycle over and a description of where they come from."""
    if source is None:
        scene = SyntheticRoad(default_camera())
        frames = [scene.render(i / 10.0)[0] for i in range(min(count, SYNTHETIC_FRAMES))]
        return frames, f"built-in synthetic road frames ({len(frames)} distinct, 1280x720)"
    sources, errors = expand_sources([source])
    images = [s.path for s in sources if s.kind == "image"]
    if not images:
        raise ValueError(f"no images in {source}" + (f": {errors[0]}" if errors else ""))
    frames = [read_image(p) for p in images[:count]]
    sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})
    return frames, f"{source} ({len(frames)} images, {', '.join(sizes)})"


def _best_seconds(run, seconds: float, synchronize) -> float:
    """The shortest of repeated calls of ``run`` over ``seconds`` (after one untimed call)."""
    run()
    synchronize()
    best = float("inf")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        t0 = time.perf_counter()
        run()
        synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_ceiling(device: str, seconds: float = 2.0) -> tuple[float, str]:
    """(GFLOP/s, what ran it): the best rate of fp32 matrix products on ``device`` (torch's
    threads on a CPU) over ``seconds``, what a network of convolutions could reach at most.

    On a CPU two libraries' GEMMs are tried, each for half the time, and the faster counts:
    MKL's (``torch.mm``) runs far below the hardware on AMD CPUs (165 against oneDNN's 204
    GFLOP/s on the Zen 4 of docs/benchmarks.md), and the engines' convolutions are oneDNN's
    (OpenVINO) or MLAS's, so MKL alone let them exceed "the ceiling".
    """
    synchronize = device_synchronizer(device)
    n = 1024
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    out = torch.empty(n, n, device=device)
    kernels = {f"{n}x{n} matrix product": (lambda: torch.mm(a, b, out=out), 2 * n ** 3)}
    if device == "cpu":
        # A 1x1 convolution is a [64*64, 512] x [512, 512] GEMM, run by oneDNN.
        x = torch.randn(1, 512, 64, 64).contiguous(memory_format=torch.channels_last)
        w = torch.randn(512, 512, 1, 1).contiguous(memory_format=torch.channels_last)

        def conv():
            with torch.inference_mode():
                torch.nn.functional.conv2d(x, w)
        kernels["oneDNN 512-channel 1x1 convolution"] = (conv, 2 * 512 * 512 * 64 * 64)
    rates = {name: flop / _best_seconds(run, seconds / len(kernels), synchronize) / 1e9
             for name, (run, flop) in kernels.items()}
    best = max(rates, key=rates.get)
    return rates[best], best


def network_gflop(model: torch.nn.Module, input_hw: tuple[int, int]) -> float:
    """GFLOP of one frame of ``input_hw`` through ``model`` (2 per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(torch.zeros(1, 3, *input_hw))
    return counter.get_total_flops() / 1e9


def percentile_ms(values: list[float]) -> dict:
    if not values:
        return {"median_ms": None, "p95_ms": None}
    return {"median_ms": round(float(np.median(values)), 3),
            "p95_ms": round(float(np.percentile(values, 95)), 3)}


def match_count(ref, test) -> int:
    """Reference detections matched one-to-one by a same-class detection at IoU >= 0.5."""
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


class PreparedVariant:
    """One variant set up and warmed up, ready to time frames in turn with the others."""

    def __init__(self, variant: Variant, model, frames: list[np.ndarray], inputs: list,
                 config: NodeConfig):
        """``inputs``: the image messages of ``frames``, shared by every variant."""
        started = time.monotonic()
        self.variant = variant
        config = config.with_changes(backend=variant.backend, precision=variant.precision,
                                     **dict(variant.settings))
        self.pipeline = build_pipeline(config, model=model, **dict(variant.options))
        for shape in sorted({f.shape[:2] for f in frames}):
            self.pipeline.backend.prepare(self.pipeline.network_input_hw(shape))
        self.processor = FrameProcessor(self.pipeline, config)
        self.image_hw = frames[0].shape[:2]
        height, width = self.image_hw
        # The grids of config/hybridnets.yaml's camera, for frames of the first frame's size.
        self.processor.set_camera_info(camera_info_from_model(default_camera(width, height),
                                                              "camera_optical_frame"))
        self.inputs = inputs
        self.everything = planner_outputs(config.adapter)
        self.wanted = self.everything - frozenset().union(*OPT_IN.values())
        for i in range(WARMUP_FRAMES):
            self.processor.process(self.inputs[i % len(self.inputs)], self.wanted)
        self.setup_s = time.monotonic() - started
        self.times: dict[str, list[float]] = {key: [] for key in STAGES}
        self.e2e: list[float] = []
        self.results: dict = {}  # the outputs of each distinct frame, for the fidelity check

    def time_frame(self, i: int) -> None:
        """Process frame ``i`` (cycling over the frames) and keep its stage times."""
        index = i % len(self.inputs)
        t0 = time.perf_counter()
        outcome = self.processor.process(self.inputs[index], self.wanted)
        self.e2e.append((time.perf_counter() - t0) * 1e3)
        for key in STAGES:
            self.times[key].append(outcome.timings_ms[key])
        self.results.setdefault(index, outcome.result)

    def opt_in_costs(self, n_frames: int) -> dict:
        """What each OPT_IN group adds to a frame when subscribed, on top of the planner's
        other outputs: the median of the time around the network (end to end less the
        network, each frame's own) over ``n_frames`` with the group, less the same median
        of the timed frames without it (its stages, its messages and the post-processing
        it adds: the confidence)."""
        base = float(np.median(np.subtract(self.e2e, self.times["network"])))
        costs = {}
        for group, names in OPT_IN.items():
            produced = names & self.everything
            if not produced:
                continue
            around = []
            for i in range(n_frames):
                t0 = time.perf_counter()
                outcome = self.processor.process(self.inputs[i % len(self.inputs)],
                                                 self.wanted | produced)
                around.append((time.perf_counter() - t0) * 1e3 - outcome.timings_ms["network"])
            costs[group] = round(float(np.median(around)) - base, 3)
        return costs

    def record(self) -> dict:
        record = {
            "description": self.pipeline.backend.describe(),
            "setup_s": round(self.setup_s, 2),
            "stages": {label: percentile_ms(self.times[key]) for key, label in STAGES.items()},
            "network_ms": percentile_ms(self.times["network"])["median_ms"],
            "e2e_ms": percentile_ms(self.e2e)["median_ms"],
            "e2e_p95_ms": percentile_ms(self.e2e)["p95_ms"],
        }
        record["fps"] = round(1e3 / record["e2e_ms"], 2)
        record["input_hw"] = list(self.pipeline.network_input_hw(self.image_hw))
        return record


def fidelity(reference: dict, results: dict) -> dict:
    ref_total = sum(len(reference[i].detections) for i in reference)
    matched = sum(match_count(reference[i].detections, results[i].detections) for i in reference)
    found = sum(len(results[i].detections) for i in reference)
    agreement = float(np.mean([(reference[i].seg_mask == results[i].seg_mask).mean()
                               for i in reference]))
    record = {"detections_reference": ref_total, "detections": found,
              "detections_matched": matched,
              "matched_fraction": round(matched / ref_total, 4) if ref_total else None,
              "mask_agreement": round(agreement, 5)}
    if reference[next(iter(reference))].depth_m is not None:
        errors = np.concatenate([np.abs(reference[i].depth_m - results[i].depth_m).ravel()
                                 for i in reference])
        record.update(depth_within_1cm=round(float((errors <= 0.01).mean()), 5),
                      depth_median_error_m=round(float(np.median(errors)), 4))
    return record


def run_bench(variants: list[Variant], model, frames: list[np.ndarray], n_frames: int,
              config: NodeConfig, ceiling_gflops: float | None = None) -> tuple[dict, dict | None]:
    """Set up every variant, then time them frame by frame in turn (in reversed order every
    other frame): a machine whose speed drifts, as a shared host's does, then slows every
    variant alike, where one variant's run after another's could flip their order. Returns
    the --json document's "backends" and "opt_in" (OPT_IN's costs on the fastest exact
    fp32 engine; None: none ran)."""
    prepared, skipped = [], {}
    inputs = [messages.image(Header(frame_id="camera_optical_frame"), f, "bgr8") for f in frames]
    for variant in variants:
        log.info("bench: setting up %s ...", variant.label)
        try:
            prepared.append(PreparedVariant(variant, model, frames, inputs, config))
        except BackendUnavailable as exc:
            skipped[variant.label] = {"skipped": str(exc)}
            log.warning("bench: %s skipped: %s", variant.label, exc)
    if prepared:
        log.info("bench: timing %d frames of each of %d variants, taking turns", n_frames,
                 len(prepared))
    for i in range(n_frames):
        for run in prepared if i % 2 == 0 else prepared[::-1]:
            run.time_frame(i)
    exact = [run for run in prepared if run.variant.precision == "fp32" and not run.variant.settings]
    opt_in = None
    if exact:
        fastest = min(exact, key=lambda run: np.median(run.times["network"]))
        opt_in = {"variant": fastest.variant.label, "ms": fastest.opt_in_costs(n_frames)}
    records, reference, reference_label = dict(skipped), None, None
    gflop: dict[tuple[int, int], float] = {}
    for run in prepared:
        record = run.record()
        input_hw = tuple(record["input_hw"])
        if input_hw not in gflop:
            gflop[input_hw] = network_gflop(model, input_hw)
        record["gflop_per_frame"] = round(gflop[input_hw], 2)
        record["gflops"] = round(gflop[input_hw] / (record["network_ms"] / 1e3), 1)
        if ceiling_gflops:
            record["ceiling_fraction"] = round(record["gflops"] / ceiling_gflops, 3)
        if reference is None and run.variant.precision == "fp32":
            reference, reference_label = run.results, run.variant.label
        if reference is not None:
            record["fidelity"] = dict(fidelity(reference, run.results), reference=reference_label)
        records[run.variant.label] = record
    del prepared
    gc.collect()
    return records, opt_in


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
    rows.append([f"end to end speed-up vs {baseline}"] + [
        f"{backends[baseline]['e2e_ms'] / backends[n]['e2e_ms']:.2f}x" for n in names])
    rows.append(["pipeline overhead on network"] + [
        f"{(backends[n]['e2e_ms'] / backends[n]['network_ms'] - 1) * 100:.1f}%" for n in names])
    rows.append(["network GFLOP per frame"] + [f"{backends[n]['gflop_per_frame']:.1f}" for n in names])
    rows.append(["network GFLOP/s"] + [f"{backends[n]['gflops']:.1f}" for n in names])
    if doc.get("gemm_ceiling_gflops"):
        rows.append([f"of the GEMM ceiling ({doc['gemm_ceiling_gflops']:.0f} GFLOP/s)"] + [
            f"{backends[n]['ceiling_fraction'] * 100:.0f}%" for n in names])
    rows.append(["setup + warm-up (s)"] + [f"{backends[n]['setup_s']:.1f}" for n in names])
    if any("fidelity" in backends[n] for n in names):
        ref = next(backends[n]["fidelity"]["reference"] for n in names if "fidelity" in backends[n])
        rows.append([f"detections matched vs {ref}"] + [_matched(backends[n]) for n in names])
        rows.append([f"mask agreement vs {ref}"] + [
            f"{backends[n]['fidelity']['mask_agreement'] * 100:.2f}%" if "fidelity" in backends[n]
            else "n/a" for n in names])
        if any("depth_within_1cm" in backends[n].get("fidelity", {}) for n in names):
            rows.append([f"depth within 1 cm vs {ref}"] + [
                f"{backends[n]['fidelity']['depth_within_1cm'] * 100:.2f}%"
                if "fidelity" in backends[n] else "n/a" for n in names])
            rows.append([f"depth median error vs {ref} (m)"] + [
                f"{backends[n]['fidelity']['depth_median_error_m']:.4f}"
                if "fidelity" in backends[n] else "n/a" for n in names])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for name in names:
        lines.append(f"{name}: {backends[name]['description']}")
    notes = {s["note"] for b in backends.values() for s in b["stages"].values() if "note" in s}
    lines += [f"n/a: {note}" for note in sorted(notes)]
    return "\n".join(lines + skipped)


def layer_profiles(variants: list[Variant], records: dict, model,
                   ceiling_gflops: float | None) -> dict:
    """Each exact CPU engine's per-layer-type profile at the input size it ran (printed),
    keyed as the variants are."""
    profiles, threads = {}, torch.get_num_threads()
    for v in variants:
        record = records.get(v.label, {})
        if v.backend not in PROFILED or v.precision != "fp32" or "input_hw" not in record:
            continue
        onnx_path = cached_onnx(model, tuple(record["input_hw"]))
        profiles[v.label] = profile_layers(v.backend, onnx_path, threads)
        print("\n" + format_layers(v.label, profiles[v.label], ceiling_gflops))
    return profiles


def record_auto_choice(model: str, timings: dict[str, float], size: int | None) -> dict:
    """What ``auto`` picked before this run and, where two or more exact fp32 engines ran,
    their network ``timings`` (median ms, timed in turn) as this CPU's measurement at ``size`` (None:
    a network whose input does not follow it), which ``auto`` follows from now on."""
    before, why = choose_auto("cpu", "fp32", model, size)
    doc = {"before": before, "before_why": why}
    if len(timings) < 2:
        doc["summary"] = (f"auto on this CPU: {before} ({why}); not re-measured (fewer than two "
                          f"of {', '.join(engine_choice.CANDIDATES)} at fp32 ran)")
        return doc
    fastest = min(timings, key=timings.get)
    path = engine_choice.record_measurement(model, timings, size)
    listing = ", ".join(f"{name} {ms:.1f} ms" for name, ms in sorted(timings.items(),
                                                                     key=lambda kv: kv[1]))
    doc.update(fastest=fastest, network_ms=timings, recorded=str(path))
    doc["summary"] = (f"auto on this CPU: fastest exact engine here is {fastest} ({listing}, "
                      f"median network time, the engines timed in turn); auto picked "
                      f"{before} before this run ({why}); "
                      f"{'unchanged' if before == fastest else 'now ' + fastest}"
                      f" (measurement recorded in {path})")
    return doc


def _matched(record: dict) -> str:
    f = record.get("fidelity")
    if not f:
        return "n/a"
    return f"{f['detections_matched']}/{f['detections_reference']} (+{f['detections'] - f['detections_matched']})"


def bench(config: NodeConfig, variants: list[Variant] | None = None, source: str | None = None,
          frames: int = 30, calib: str | None = None, json_path: str | None = None,
          threads: int | None = None, layers: bool = False) -> int:
    """``hybridnets bench``: prints the table (and writes ``json_path``); 0 if any backend
    ran. ``config`` gives the weights, device and input size; ``variants`` default to every
    backend that runs on its device. ``layers``: also each exact CPU engine's time by layer
    type (tools.layer_profile)."""
    if threads:
        torch.set_num_threads(threads)
    device = resolve_device(config.device)
    variants = path_variants(variants or default_variants(device, config), config)
    runnable = [v for v in variants if not missing(v.backend, device)]
    skipped = {v.label: {"skipped": f"backend {v.backend!r} cannot run on {device}: missing "
                                    f"{'; '.join(missing(v.backend, device))}"}
               for v in variants if v not in runnable}
    images, source_text = load_frames(source, frames)
    weights_note = ("random (no checkpoint given: the network's timings hardly depend on weight "
                    "values, eager PyTorch's can through denormal numbers; but random weights flag "
                    "thousands of boxes on some frames, which inflates post-processing and message "
                    "build: pass --weights for representative numbers of those stages and for "
                    "fidelity)")
    if runnable:
        model, weights = load_module(config.with_changes(allow_random_weights=True))
        weights_note = str(weights) if weights else weights_note
    height, width = images[0].shape[:2]
    config = config.with_changes(device=device, camera_resolution=[width, height])
    int8 = any(v.precision == "int8" for v in runnable)
    ceiling, ceiling_kernel = gemm_ceiling(device) if runnable else (None, None)
    with tempfile.TemporaryDirectory(prefix="hybridnets-calib-") as tmp:
        calib = calib or source
        if calib is None and int8:
            for i, frame in enumerate(images):  # calibrate on the frames being measured
                cv2.imwrite(str(Path(tmp) / f"frame_{i:03d}.png"), frame)
            calib = tmp
        config = config.with_changes(int8_calibration=calib or "")
        backends, opt_in = (run_bench(runnable, model, images, frames, config, ceiling)
                            if runnable else ({}, None))
    backends.update(skipped)
    doc = {"date": time.strftime("%Y-%m-%d"), "model": config.model,
           "machine": machine_info(device),
           "source": source_text, "frames": frames, "size": config.input_size,
           "weights": weights_note,
           "gemm_ceiling_gflops": round(ceiling, 1) if ceiling else None,
           "gemm_ceiling_kernel": ceiling_kernel,
           "calibration": (calib if calib != tmp else "the frames measured") if int8 else None,
           "backends": {v.label: backends[v.label] for v in variants}, "opt_in": opt_in}
    m = doc["machine"]
    print(f"hybridnets bench: model {config.model}, {frames} frames from {source_text}"
          + (f", --size {config.input_size}" if config.adapter.uses_input_size else ""))
    print(f"weights: {weights_note}")
    limits = f"; capped by {' '.join(m['isa_limits'])}" if m["isa_limits"] else ""
    print(f"machine: {m['cpu']} ({', '.join(m['cpu_flags']) or 'no flags read'}{limits}), "
          f"{m['threads']} threads of {m['cpu_count']} CPUs, GPU: {m['gpu'] or 'none used'}; "
          + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    if doc["calibration"]:
        print(f"int8 calibrated on {doc['calibration']}")
    if ceiling:
        print(f"GEMM ceiling: {ceiling:.0f} GFLOP/s (fp32, {ceiling_kernel}: the fastest GEMM "
              f"tried, best of 2 s, {m['threads']} threads)")
    print()
    print(format_table(doc))
    if opt_in and opt_in["ms"]:
        print(f"\nopt-in outputs, built only for their subscribers (not in the overhead above), "
              f"per frame on {opt_in['variant']}: "
              + "; ".join(f"{group} +{ms:.1f} ms" for group, ms in opt_in["ms"].items()))
    if device == "cpu":
        # auto's candidates on the main path (the exact one), timed in turn with the rest
        timings = {name: backends[f"{name}:fp32"]["network_ms"] for name in engine_choice.CANDIDATES
                   if "network_ms" in backends.get(f"{name}:fp32", {})}
        doc["auto"] = record_auto_choice(
            config.model, timings, engine_choice.measured_size(config.adapter, config.input_size))
        print(f"\n{doc['auto']['summary']}")
    if layers and device == "cpu":
        doc["layers"] = layer_profiles(runnable, backends, model, ceiling)
    elif layers:
        print(f"\n--layers profiles the CPU engines; this run was on {device}")
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {json_path}")
    ran = [v for v in backends.values() if "stages" in v]
    return 0 if ran else 1
