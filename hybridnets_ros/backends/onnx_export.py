"""ONNX export (one static input shape per file), for the engines and ``hybridnets export``.

The TorchScript-based exporter (``dynamo=False``) is used on purpose: faster to export,
exact, and its graph runs faster in ONNX Runtime than the torch.export-based one's, which
also needs onnxscript (measurements in docs/benchmarks.md). The shape is static because
some layers pad from the input size and TensorRT/INT8 want fixed shapes: callers build one
file per (H, W) and cache it. Input and output names come from the network's adapter and
are recorded in the file's metadata beside what it says about the network. The exporter
is not re-entrant: exports run one at a time per process (``build_lock``).
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .build_lock import exclusive
from .engine_cache import EngineCache, EngineKey, weights_digest
from ..core.adapter import ModelAdapter

log = logging.getLogger(__name__)

OPSET = 17
MAX_REL_L2 = 1e-4  # an export differing more from PyTorch than this is broken


def exporter_id() -> str:
    """Part of a cached ONNX file's key: a new exporter may write a different graph."""
    return f"torch {torch.__version__} torchscript-exporter opset {OPSET}"


def _cpu_fp32(model: torch.nn.Module) -> torch.nn.Module:
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model.eval()
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def export_onnx(model: torch.nn.Module, adapter: ModelAdapter, path: str | Path,
                input_hw: tuple[int, int], digest: str | None = None, batch: int = 1) -> Path:
    """Write ``model`` (the module of ``adapter``'s network) as ONNX for a
    [batch,3,H,W] float32 input and check it with onnx.checker.

    The file's metadata records the input size, the input and output names, the network's
    own entries (``ModelAdapter.onnx_metadata``: normalisation, class names) and the
    weights digest.
    """
    import onnx

    path = Path(path)
    height, width = input_hw
    multiple = adapter.input_multiple
    if height % multiple or width % multiple:
        raise ValueError(f"input {width}x{height}: both sides must be multiples of {multiple}")
    model = _cpu_fp32(model)
    dummy = torch.zeros(batch, 3, height, width)
    # The tracer warns that MaxPoolSame's padding becomes a constant: intended, the export
    # is for this shape only; the exporter's other warnings are about its own deprecation.
    with exclusive(f"{adapter.name} ONNX export"), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[adapter.input_name],
                          output_names=list(adapter.output_names), do_constant_folding=True)
    proto = onnx.load(str(path))
    meta = {"input_hw": f"{height},{width}", "batch": str(batch), **adapter.onnx_metadata(),
            "input_name": adapter.input_name, "output_names": ",".join(adapter.output_names),
            "weights_sha256": digest or weights_digest(model), "exporter": exporter_id()}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def output_names_of(onnx_path: str | Path) -> tuple[str, ...]:
    """The output names an exported file records, in the network's order."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return tuple(meta["output_names"].split(","))


def compare_with_torch(onnx_path: str | Path, model: torch.nn.Module,
                       inputs: np.ndarray) -> dict[str, float]:
    """Relative L2 error of each output of ONNX Runtime (CPU) against PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = output_names_of(onnx_path)
    ours = session.run(list(names), {session.get_inputs()[0].name: inputs})
    with torch.inference_mode():
        reference = _cpu_fp32(model)(torch.from_numpy(inputs))
    reference = reference if isinstance(reference, (tuple, list)) else (reference,)
    return {name: float(np.linalg.norm(a.astype(np.float64) - r.numpy()) /
                        np.linalg.norm(r.numpy().astype(np.float64)))
            for name, a, r in zip(names, ours, reference)}


def onnx_key(input_hw: tuple[int, int], digest: str, adapter: ModelAdapter,
             batch: int = 1) -> EngineKey:
    # The weights digest tells networks apart; a network's graph revision, once raised,
    # tells its exports apart (the first revision adds nothing, so earlier files still hit).
    revision = f" graph revision {adapter.onnx_revision}" if adapter.onnx_revision > 1 else ""
    return EngineKey("onnx", tuple(input_hw), "fp32", digest,
                     runtime=exporter_id() + revision, batch=batch)


def cached_onnx(model: torch.nn.Module, adapter: ModelAdapter, input_hw: tuple[int, int],
                digest: str | None = None, cache: EngineCache | None = None,
                batch: int = 1) -> Path:
    """The fp32 ONNX export of ``model`` (the module of ``adapter``'s network) for
    ``input_hw`` (and a static ``batch``) from the cache, exported if absent."""
    cache = cache or EngineCache()
    digest = digest or weights_digest(model)
    return cache.get_or_build(onnx_key(input_hw, digest, adapter, batch), ".onnx",
                              lambda out: export_onnx(model, adapter, out, input_hw, digest=digest,
                                                      batch=batch),
                              f"{adapter.name} ONNX export")


# --- fp16 (TensorRT's strongly typed networks build in the types the ONNX file has) ---

# Ops kept in float32: reductions over whole feature maps (the squeeze-excitation means and the
# BiFPN's fusion-weight sums) and the division normalising those weights; TensorRT may run a
# half-precision reduction with a half accumulator. All the rest runs in fp16. The network's
# input and outputs stay float32, so callers and engines bind the same buffers at any precision.
FP16_KEEP_FP32_OPS = ("ReduceMean", "ReduceSum", "Div")
# Inputs that ONNX defines as float32 whatever the data type (Resize's roi and scales).
_FLOAT32_ONLY_INPUTS = {"Resize": {1, 2}}


def fp16_rule_id() -> str:
    """Part of an fp16 file's cache key: another rule writes another graph."""
    return f"fp16 keep-io-fp32 keep-ops {','.join(FP16_KEEP_FP32_OPS)}"


def convert_to_fp16(fp32_path: str | Path, out_path: str | Path,
                    keep_fp32_ops: tuple[str, ...] = FP16_KEEP_FP32_OPS) -> Path:
    """Write an fp16 copy of an fp32 ONNX file: float weights, constants and activations in
    half precision except the ops ``keep_fp32_ops``, with Casts where the two meet; inputs
    and outputs stay float32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper, shape_inference

    float32, float16 = TensorProto.FLOAT, TensorProto.FLOAT16
    model = shape_inference.infer_shapes(onnx.load(str(fp32_path)))
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.value_info, *graph.input, *graph.output)}
    initializers = {i.name: i for i in graph.initializer}
    types.update({name: init.data_type for name, init in initializers.items()})

    half_values: set[str] = set()        # produced in fp16
    casts: dict[tuple[str, int], str] = {}
    half_weights, float_weights = set(), set()
    nodes = []

    def cast(name: str, to: int) -> str:
        if (name, to) not in casts:
            out = f"{name}__{'fp16' if to == float16 else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [out], to=to, name=out + "_cast"))
            casts[name, to] = out
        return casts[name, to]

    for node in graph.node:
        in_half = node.op_type not in keep_fp32_ops
        for slot, name in enumerate(node.input):
            if not name or types.get(name) != float32:
                continue
            want_half = in_half and slot not in _FLOAT32_ONLY_INPUTS.get(node.op_type, ())
            if name in initializers:
                (half_weights if want_half else float_weights).add(name)
                if want_half:
                    node.input[slot] = name + "__fp16"
            elif want_half != (name in half_values):
                node.input[slot] = cast(name, float16 if want_half else float32)
        if in_half:
            for attribute in node.attribute:
                if node.op_type == "Cast" and attribute.name == "to" and attribute.i == float32:
                    attribute.i = float16
                elif (attribute.type == onnx.AttributeProto.TENSOR
                      and attribute.t.data_type == float32):
                    attribute.t.CopyFrom(numpy_helper.from_array(
                        numpy_helper.to_array(attribute.t).astype(np.float16), attribute.t.name))
            half_values.update(name for name in node.output if types.get(name) == float32)
        nodes.append(node)

    outputs = {o.name for o in graph.output}
    for node in list(nodes):
        for i, name in enumerate(node.output):
            if name in outputs and name in half_values:
                node.output[i] = name + "__fp16"
                nodes.append(helper.make_node("Cast", [node.output[i]], [name], to=float32,
                                              name=name + "_cast"))
    weights = [numpy_helper.from_array(numpy_helper.to_array(initializers[name]).astype(np.float16),
                                       name + "__fp16") for name in sorted(half_weights)]
    weights += [init for name, init in initializers.items()
                if name in float_weights or name not in half_weights]
    del graph.initializer[:]
    graph.initializer.extend(weights)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    model = shape_inference.infer_shapes(model)
    meta = {p.key: p.value for p in model.metadata_props}
    if "exporter" in meta:
        for prop in model.metadata_props:
            if prop.key == "exporter":
                prop.value = f"{meta['exporter']}; {fp16_rule_id()}"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out_path))
    return Path(out_path)


def cached_fp16_onnx(model: torch.nn.Module, adapter: ModelAdapter, input_hw: tuple[int, int],
                     digest: str | None = None, cache: EngineCache | None = None,
                     batch: int = 1) -> Path:
    """The fp16 conversion (:func:`convert_to_fp16`) of ``cached_onnx``'s file, from the cache."""
    cache = cache or EngineCache()
    digest = digest or weights_digest(model)
    fp32 = cached_onnx(model, adapter, input_hw, digest, cache, batch)
    base = onnx_key(input_hw, digest, adapter, batch)
    key = EngineKey(base.kind, base.input_hw, "fp16", digest,
                    runtime=f"{base.runtime}; {fp16_rule_id()}", batch=batch)
    return cache.get_or_build(key, ".onnx", lambda out: convert_to_fp16(fp32, out),
                              f"{adapter.name} fp16 ONNX")
