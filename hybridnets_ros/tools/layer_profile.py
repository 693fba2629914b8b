"""``hybridnets bench --layers``: where a CPU engine spends the network's time, by layer type.

The share of the GEMM ceiling (bench's table) says how far a network is from the machine's
limit; this says why: each engine's own per-layer profile (OpenVINO's performance counters,
ONNX Runtime's profiler) of the exported ONNX graph, summed by layer type, with each type's
convolution FLOPs and so its GFLOP/s. Memory-bound layers (pools, depthwise convolutions,
additions) show up as a large share of the time at few FLOPs.
"""
from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

PROFILED = ("openvino", "onnxruntime")
ROWS_SHOWN = 8


def _input(shape) -> np.ndarray:
    return np.random.default_rng(0).standard_normal([int(d) for d in shape]).astype(np.float32)


def _summary(times_s: dict[str, float], flops: dict[str, float], runs: int) -> list[dict]:
    total = sum(times_s.values()) or 1.0
    rows = [{"type": kind, "ms": round(t / runs * 1e3, 2), "share": round(t / total, 4),
             "gflop": round(flops.get(kind, 0.0) / 1e9, 6),
             "gflops": round(flops[kind] / (t / runs) / 1e9, 1) if flops.get(kind) and t else None}
            for kind, t in times_s.items()]
    return sorted(rows, key=lambda r: -r["ms"])


def profile_openvino(onnx_path: Path, threads: int, runs: int = 3) -> list[dict]:
    """Layer types of the compiled fp32 model, by OpenVINO's own counters (latency hint)."""
    import openvino

    core = openvino.Core()
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
        "PERF_COUNT": "YES", "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": threads})
    conv: dict[str, tuple[str, float]] = {}  # runtime layer name -> (kind, FLOPs)
    for op in compiled.get_runtime_model().get_ordered_ops():
        layer = op.get_rt_info()["layerType"].astype(str)
        if layer in ("Convolution", "GroupConvolution") and op.get_input_size() > 1:
            weights = list(op.input(1).get_partial_shape().to_shape())
            out = list(op.output(0).get_partial_shape().to_shape())
            grouped = len(weights) == 5  # [groups, out/groups, in/groups, kh, kw]
            per_output = np.prod(weights[2:] if grouped else weights[1:])
            kind = ("depthwise convolution" if grouped and weights[2] == 1
                    else "grouped convolution" if grouped else "convolution")
            conv[op.get_friendly_name()] = (kind, 2.0 * float(np.prod(out)) * float(per_output))
    request = compiled.create_infer_request()
    x = _input(compiled.inputs[0].get_shape())
    request.infer({0: x})
    times, flops = defaultdict(float), defaultdict(float)
    for _ in range(runs):
        request.infer({0: x})
        for layer in request.get_profiling_info():
            if layer.status != layer.Status.EXECUTED:
                continue
            kind, flop = conv.get(layer.node_name, (layer.node_type, 0.0))
            times[kind] += layer.real_time.total_seconds()
            flops[kind] += flop / runs
    return _summary(times, flops, runs)


# Activations ONNX Runtime fuses into the convolution before them (its fused node then
# carries the activation's output name).
FUSED_ACTIVATIONS = {"Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu", "HardSigmoid"}


def _onnx_conv_flops(onnx_path: Path) -> dict[str, tuple[str, float]]:
    """(kind, FLOPs) of each Conv of the ONNX graph (static shapes; constants propagated, so
    that sizes after a Resize are known), under each name ONNX
    Runtime's profile may give it: the node's own, or after its layout pass
    ``<output>_nchwc``, the output being the fused activation's where there is one."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(onnx_path)), data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in (*model.graph.value_info, *model.graph.output)}
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    consumers = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    out = {}
    for node in model.graph.node:
        if (node.op_type != "Conv" or node.input[1] not in weights
                or not all(shapes.get(node.output[0], [0]))):  # 0: a size not inferred
            continue
        w = weights[node.input[1]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        kind = ("depthwise convolution" if group > 1 and w[1] == 1
                else "grouped convolution" if group > 1 else "convolution")
        flop = 2.0 * float(np.prod(shapes[node.output[0]])) * float(np.prod(w[1:]))
        outputs = [node.output[0]]
        after = consumers[node.output[0]]
        if len(after) == 1 and after[0].op_type in FUSED_ACTIVATIONS:
            outputs.append(after[0].output[0])
        for name in (node.name, *(f"{o}_nchwc" for o in outputs)):
            out[name] = (kind, flop)
    return out


def profile_onnxruntime(onnx_path: Path, threads: int, runs: int = 3) -> list[dict]:
    """Operator types of the session's graph (after its fusions), by ONNX Runtime's profiler."""
    import onnxruntime

    conv = _onnx_conv_flops(onnx_path)
    with tempfile.TemporaryDirectory(prefix="hybridnets-ort-profile-") as tmp:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = onnxruntime.InferenceSession(str(onnx_path), options,
                                               providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        x = _input(session.get_inputs()[0].shape)
        for _ in range(runs + 1):  # the first run warms up and is left out below
            session.run(None, {name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    start = runs_seen[1]["ts"] if len(runs_seen) > 1 else 0
    times, flops = defaultdict(float), defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time") or e["ts"] < start:
            continue
        node = e["name"][:-len("_kernel_time")]
        kind, flop = conv.get(node, (e["args"]["op_name"], 0.0))
        times[kind] += e["dur"] / 1e6
        flops[kind] += flop / runs
    return _summary(times, flops, runs)


def profile_layers(backend: str, onnx_path: Path, threads: int, runs: int = 3) -> list[dict]:
    return (profile_openvino if backend == "openvino" else profile_onnxruntime)(
        Path(onnx_path), threads, runs)


def format_layers(label: str, rows: list[dict], ceiling_gflops: float | None) -> str:
    total = sum(r["ms"] for r in rows)
    lines = [f"{label}: {total:.1f} ms in the engine's layers, by type"]
    for r in rows[:ROWS_SHOWN]:
        speed = ""
        if r["gflops"]:
            speed = f"  {r['gflop']:6.2f} GFLOP  {r['gflops']:6.1f} GFLOP/s"
            if ceiling_gflops:
                speed += f" ({r['gflops'] / ceiling_gflops:.0%} of the ceiling)"
        lines.append(f"  {r['type'][:34]:34s} {r['ms']:8.1f} ms {r['share']:6.1%}{speed}")
    if len(rows) > ROWS_SHOWN:
        rest = rows[ROWS_SHOWN:]
        lines.append(f"  {f'other ({len(rest)} types)':34s} {sum(r['ms'] for r in rest):8.1f} ms "
                     f"{sum(r['share'] for r in rest):6.1%}")
    return "\n".join(lines)
