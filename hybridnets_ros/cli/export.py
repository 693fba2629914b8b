"""``hybridnets export``: ONNX, or a TensorRT / torch2trt engine built ahead of time."""
from __future__ import annotations

import shutil
from pathlib import Path

from ..backends import create_backend
from ..backends.engine_cache import EngineCache, weights_digest
from ..backends.onnx_export import MAX_REL_L2, OPSET, cached_onnx, compare_with_torch
from ..backends.quantize import cached_int8_onnx, calibration_frames
from ..core.synthetic import SyntheticRoad, default_camera
from ..pipeline.factory import load_module
from .common import (USER_ERRORS, CliError, add_family_options, add_setting_options,
                     config_from_options)


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export ONNX or build a TensorRT engine ahead of time",
                       description="ONNX (opset 17, static shape for the camera resolution and "
                                   "--size, checked against PyTorch) or a TensorRT / torch2trt "
                                   "engine, built into the cache the runtime loads from.")
    add_family_options(p)
    add_setting_options(p, "weights", "allow_random_weights", "input_size", "int8_calibration",
                        "device", defaults={"device": "cuda"})
    p.set_defaults(device="cuda")  # engines are built on a GPU
    p.add_argument("--format", default="onnx", choices=("onnx", "engine", "torch2trt"),
                   help="onnx, engine (TensorRT from the ONNX export) or torch2trt (default onnx)")
    p.add_argument("--camera", default="1280x720", metavar="WxH",
                   help="camera resolution; with --size it fixes the input shape (default 1280x720)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="fp16 engine (engine formats)")
    precision.add_argument("--int8", action="store_true", help="INT8, calibrated on --calib DIR")
    p.add_argument("--output", metavar="PATH",
                   help="also copy the result here (default for onnx: MODEL_HxW.onnx)")
    p.set_defaults(func=run)


def parse_camera(text: str) -> list[int]:
    """'1280x720' -> [1280, 720] (a camera_resolution setting)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CliError(f"camera resolution must look like 1280x720, got {text!r}") from None
    return [width, height]


def run(args) -> int:
    precision = "fp16" if args.fp16 else "int8" if args.int8 else "fp32"
    if args.int8 and not args.int8_calibration:
        raise CliError("--int8 needs --calib DIR: a folder of frames like the camera's")
    if args.format == "onnx" and precision == "fp16":
        raise CliError("--fp16 is for engines (--format engine/torch2trt); ONNX is exported "
                       "in fp32 and TensorRT builds fp16 from it")
    config = config_from_options(args, camera_resolution=parse_camera(args.camera),
                                 precision=precision)
    try:
        return export(config, args.format, args.output)
    except USER_ERRORS as exc:
        raise CliError(str(exc)) from None


def export(config, fmt: str, output: str | None) -> int:
    """Writes what ``fmt`` asks for and prints what was written and where."""
    source_hw, adapter = config.source_hw, config.adapter
    preprocessor = adapter.preprocessor(config.input_size, **config.network_options())
    input_hw = preprocessor.input_hw(source_hw)
    model, _ = load_module(config)
    digest = weights_digest(model)
    shape = (f"input 1x3x{input_hw[0]}x{input_hw[1]} for a {source_hw[1]}x{source_hw[0]} camera"
             + (f" at --size {config.input_size}" if adapter.uses_input_size else ""))
    if fmt != "onnx":
        backend = create_backend("tensorrt" if fmt == "engine" else "torch2trt", model,
                                 adapter, device=config.device, precision=config.precision,
                                 calib=config.int8_calibration or None,
                                 source_hw=source_hw, input_size=config.input_size,
                                 digest=digest)
        path = backend.engine_path(input_hw)
        print(f"{backend.describe()} engine, {shape}: {path} (loaded from there at run time)")
        if output:
            shutil.copyfile(path, output)
            print(f"copied to {output}")
        return 0

    cache = EngineCache()
    if config.precision == "int8":
        if not adapter.int8_calibration:
            raise CliError(f"int8 calibration is not available for {adapter.name} here")
        frames = calibration_frames(config.int8_calibration, source_hw, preprocessor)
        path = cached_int8_onnx(model, adapter, input_hw, digest, frames, cache)
    else:
        path = cached_onnx(model, adapter, input_hw, digest, cache)
    out = Path(output or (f"{adapter.name}_{input_hw[0]}x{input_hw[1]}"
                          f"{'_int8' if config.precision == 'int8' else ''}.onnx"))
    shutil.copyfile(path, out)
    extras = adapter.export_extras(out, input_hw)
    print(f"wrote {out} ({config.precision}, opset {OPSET}, {shape})"
          + "".join(f"; also {p}" for p in extras))
    if config.precision != "fp32":
        print("INT8 is not compared with PyTorch here: `hybridnets bench` reports its fidelity")
        return 0
    # Checked on a realistic frame: the synthetic road at the camera resolution.
    frame = SyntheticRoad(default_camera(source_hw[1], source_hw[0])).render(0.0)[0]
    inputs = preprocessor(frame)[0]
    errors = compare_with_torch(out, model, inputs)
    worst = max(errors.values())
    print("ONNX Runtime vs PyTorch, relative L2: " +
          ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) +
          (" (ok)" if worst <= MAX_REL_L2 else f" ABOVE {MAX_REL_L2:.0e}"))
    return 0 if worst <= MAX_REL_L2 else 1
