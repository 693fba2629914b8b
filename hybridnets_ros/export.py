"""ONNX export (one static input shape per file) and the ``hybridnets export`` command.

The TorchScript-based exporter (``dynamo=False``) is used on purpose. With torch 2.13 it
exports this network in ~3 s, and ONNX Runtime then matches PyTorch to ~4e-6 relative L2
at ~130 ms per 384x640 frame on 2 CPU cores. The torch.export-based exporter took ~20 s,
needs the extra onnxscript package, and its graph ran ~3x slower in ONNX Runtime with
~2e-2 error. The shape is static because MaxPoolSame pads from the input size and
TensorRT/INT8 want fixed shapes: callers build one file per (H, W) and cache it.
"""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from .anchors import generate_anchors
from .engine_cache import EngineCache, EngineKey, weights_digest
from .spec import BDD100K, ModelSpec

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("regression", "classification", "segmentation")
MAX_REL_L2 = 1e-4  # an export differing more from PyTorch than this is broken


def exporter_id() -> str:
    """Part of a cached ONNX file's key: a new exporter may write a different graph."""
    return f"torch {torch.__version__} torchscript-exporter opset {OPSET}"


def _cpu_fp32(model: torch.nn.Module) -> torch.nn.Module:
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model.eval()
    return copy.deepcopy(model).to("cpu", torch.float32).eval()


def export_onnx(model: torch.nn.Module, path: str | Path, input_hw: tuple[int, int],
                spec: ModelSpec = BDD100K, digest: str | None = None) -> Path:
    """Write ``model`` as ONNX for a [1,3,H,W] float32 input and check it with onnx.checker.

    The file's metadata records the input size, normalisation, class names and weights
    digest; the anchors are pure geometry (``generate_anchors(input_hw)``), not stored.
    """
    import onnx

    path = Path(path)
    height, width = input_hw
    if height % spec.max_stride or width % spec.max_stride:
        raise ValueError(f"input {width}x{height}: both sides must be multiples of "
                         f"{spec.max_stride}")
    model = _cpu_fp32(model)
    dummy = torch.zeros(1, 3, height, width)
    # The tracer warns that MaxPoolSame's padding becomes a constant: intended, the export
    # is for this shape only; the exporter's other warnings are about its own deprecation.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    meta = {"input_hw": f"{height},{width}", "mean_rgb": ",".join(map(str, spec.mean_rgb)),
            "std_rgb": ",".join(map(str, spec.std_rgb)),
            "class_names": ",".join(spec.class_names),
            "seg_class_names": ",".join(spec.seg_class_names),
            "weights_sha256": digest or weights_digest(model), "exporter": exporter_id()}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))
    return path


def compare_with_torch(onnx_path: str | Path, model: torch.nn.Module,
                       inputs: np.ndarray) -> dict[str, float]:
    """Relative L2 error of each output of ONNX Runtime (CPU) against PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ours = session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})
    with torch.inference_mode():
        reference = _cpu_fp32(model)(torch.from_numpy(inputs))
    return {name: float(np.linalg.norm(a.astype(np.float64) - r.numpy()) /
                        np.linalg.norm(r.numpy().astype(np.float64)))
            for name, a, r in zip(OUTPUT_NAMES, ours, reference)}


def onnx_key(input_hw: tuple[int, int], digest: str) -> EngineKey:
    return EngineKey("onnx", tuple(input_hw), "fp32", digest, runtime=exporter_id())


def cached_onnx(model: torch.nn.Module, input_hw: tuple[int, int], digest: str | None = None,
                cache: EngineCache | None = None) -> Path:
    """The fp32 ONNX export of ``model`` for ``input_hw`` from the cache, exported if absent."""
    cache = cache or EngineCache()
    digest = digest or weights_digest(model)
    return cache.get_or_build(onnx_key(input_hw, digest), ".onnx",
                              lambda out: export_onnx(model, out, input_hw, digest=digest),
                              "ONNX export")


def write_anchors(onnx_path: Path, input_hw: tuple[int, int], spec: ModelSpec = BDD100K) -> Path:
    """Anchors [N,4] (y1, x1, y2, x2) beside an exported file, for consumers outside Python."""
    path = onnx_path.with_suffix(".anchors.npy")
    np.save(path, generate_anchors(tuple(input_hw), spec))
    return path


def parse_camera(text: str) -> tuple[int, int]:
    """'1280x720' -> (720, 1280) as (H, W)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"camera resolution must look like 1280x720, got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"camera resolution must be positive, got {text!r}")
    return height, width


def run_export(args, weights: Path | None) -> int:
    """``hybridnets export``: see the CLI's help. Prints what was written and where."""
    import shutil

    from .backends import create_backend
    from .preprocess import Letterbox, Preprocessor
    from .synthetic import SyntheticRoad, default_camera
    from .weights import build_model

    source_hw = parse_camera(args.camera)
    input_hw = Letterbox.compute(source_hw, args.size, BDD100K.max_stride).input_hw
    model = build_model(weights, random_weights=weights is None)
    digest = weights_digest(model)
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    if args.int8 and not args.calib:
        raise ValueError("--int8 needs --calib DIR: a folder of frames like the camera's")
    shape = f"input 1x3x{input_hw[0]}x{input_hw[1]} for a {args.camera} camera at --size {args.size}"

    if args.format != "onnx":
        backend_name = "tensorrt" if args.format == "engine" else "torch2trt"
        backend = create_backend(backend_name, model, device=args.device, precision=precision,
                                 calib=args.calib, source_hw=source_hw, input_size=args.size,
                                 digest=digest)
        path = backend.engine_path(input_hw)
        print(f"{backend.describe()} engine, {shape}: {path} (loaded from there at run time)")
        if args.output:
            shutil.copyfile(path, args.output)
            print(f"copied to {args.output}")
        return 0

    if precision == "fp16":
        raise ValueError("--fp16 is for engines (--format engine/torch2trt); ONNX is exported "
                         "in fp32 and TensorRT builds fp16 from it")
    cache = EngineCache()
    if precision == "int8":
        from .quantize import cached_int8_onnx, calibration_frames
        frames = calibration_frames(args.calib, source_hw, args.size)
        path = cached_int8_onnx(model, input_hw, digest, frames, cache)
    else:
        path = cached_onnx(model, input_hw, digest, cache)
    output = Path(args.output or (f"hybridnets_{input_hw[0]}x{input_hw[1]}"
                                  f"{'_int8' if precision == 'int8' else ''}.onnx"))
    shutil.copyfile(path, output)
    anchors = write_anchors(output, input_hw)
    print(f"wrote {output} ({precision}, opset {OPSET}, {shape}); anchors in {anchors}")
    if precision == "fp32":
        # Checked on a realistic frame: the synthetic road at the camera resolution.
        frame = SyntheticRoad(default_camera(source_hw[1], source_hw[0])).render(0.0)[0]
        inputs = Preprocessor(args.size)(frame)[0]
        errors = compare_with_torch(output, model, inputs)
        worst = max(errors.values())
        print("ONNX Runtime vs PyTorch, relative L2: " +
              ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) +
              (" (ok)" if worst <= MAX_REL_L2 else f" ABOVE {MAX_REL_L2:.0e}"))
        return 0 if worst <= MAX_REL_L2 else 1
    print("INT8 is not compared with PyTorch here: `hybridnets bench` reports its fidelity")
    return 0
