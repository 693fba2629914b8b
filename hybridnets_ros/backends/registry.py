"""Choosing and constructing a backend by name: the one entry point for the CLI and the node.

``create_backend(name, model_or_weights, device, precision)`` checks what the name needs
before importing anything heavy, so an unavailable choice fails at once with what is
missing and what would work here; ``auto`` logs what it picked and why.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import platform
from pathlib import Path

import torch

from .base import Backend, BackendUnavailable

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "torch2trt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TORCH_OPTIONS = ("optimize", "cuda_graph", "family")
ENGINE_OPTIONS = ("calib", "source_hw", "input_size", "cache", "digest", "family")


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def missing(name: str, device: str = "cpu") -> list[str]:
    """What ``name`` lacks to run on ``device`` here (empty: it can run)."""
    cuda = device.startswith("cuda")
    needs = []
    if (cuda or name in ("tensorrt", "torch2trt")) and not torch.cuda.is_available():
        needs.append(f"a CUDA device (torch.cuda.is_available() is False; torch "
                     f"{torch.__version__} built for CUDA {torch.version.cuda or 'none'})")
    if name in ("tensorrt", "torch2trt") and not cuda:
        needs.append(f"device cuda ({name} runs on NVIDIA GPUs only; got {device!r})")
    if name == "onnxruntime":
        if not _has_module("onnxruntime"):
            needs.append("Python module 'onnxruntime' (pip install onnxruntime)")
        elif cuda:
            from .onnxruntime_backend import cuda_providers, import_onnxruntime
            if not cuda_providers(import_onnxruntime()):
                needs.append("onnxruntime's CUDAExecutionProvider (install onnxruntime-gpu)")
    if name == "openvino":
        if not _has_module("openvino"):
            needs.append("Python module 'openvino' (pip install openvino)")
        if cuda:
            needs.append(f"device cpu (the openvino backend runs on the CPU; got {device!r})")
    if name == "tensorrt" and not _has_module("tensorrt"):
        needs.append("Python module 'tensorrt' (TensorRT's Python bindings)")
    if name == "torch2trt":
        needs += [f"Python module '{m}'" for m in ("torch2trt", "tensorrt") if not _has_module(m)]
    return needs


def available_backends(device: str = "cpu") -> list[str]:
    return [name for name in BACKENDS if not missing(name, device)]


def choose_auto(device: str, precision: str) -> tuple[str, str]:
    """The best backend for ``device`` and a sentence saying why."""
    if device.startswith("cuda"):
        for name in ("tensorrt", "torch2trt"):
            if not missing(name, device):
                return name, f"{name} is installed: TensorRT engines are the fastest on NVIDIA GPUs"
        skipped = "; ".join(f"{n}: missing {', '.join(missing(n, device))}"
                            for n in ("tensorrt", "torch2trt"))
        return "torch", f"no TensorRT here ({skipped})"
    if precision in ("fp32", "bf16") and is_x86_64() and not missing("openvino", device):
        return "openvino", ("openvino is installed: the fastest exact CPU engine (fp32 pinned, "
                            "same outputs as PyTorch; docs/benchmarks.md)" if precision == "fp32"
                            else "the CPU backend with bf16")
    lacking = missing("onnxruntime", device)
    if precision == "fp32" and not lacking:
        why = ("openvino not used: " + ("; ".join(missing("openvino", device)) if is_x86_64()
                                        else f"not an x86-64 CPU ({platform.machine()})"))
        return "onnxruntime", (f"{why}; ONNX Runtime with graph optimisation runs faster than "
                               "eager PyTorch with the same outputs (docs/benchmarks.md)")
    if precision == "int8" and not lacking:
        return "onnxruntime", "the CPU backend with INT8 (static QDQ)"
    reason = f"precision {precision}" if not lacking else f"missing {', '.join(lacking)}"
    return "torch", f"onnxruntime not used ({reason})"


def create_backend(name: str, model: torch.nn.Module | str | os.PathLike, device: str = "cpu",
                   precision: str = "fp32", **options) -> Backend:
    """A backend by name: ``auto`` or one of BACKENDS, on ``device`` ("cpu", "cuda[:N]").

    ``model`` is a HybridNets module or a checkpoint path. ``options`` go to the backend:
    ``calib`` (INT8 calibration image folder), ``source_hw`` (camera resolution, for INT8
    calibration), ``input_size``, ``cache`` (an EngineCache), ``digest`` (weights digest,
    if already known), ``family`` (the model family's name, default hybridnets: the form of
    the outputs and part of the cache key), and for torch ``optimize`` and ``cuda_graph``. Raises BackendUnavailable naming what is missing and what is
    available.
    """
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from "
                                 f"{', '.join(PRECISIONS)}")
    unknown = set(options) - set(TORCH_OPTIONS) - set(ENGINE_OPTIONS)
    if unknown:
        raise TypeError(f"unknown backend option(s): {', '.join(sorted(unknown))}")
    if name == "auto":
        name, why = choose_auto(device, precision)
        log.info("backend auto: picked %s (%s) on %s: %s", name, precision, device, why)
    elif name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend {name!r}; choose from auto, "
                                 f"{', '.join(BACKENDS)} (available here: "
                                 f"{', '.join(available_backends(device)) or 'none'})")
    lacking = missing(name, device)
    if lacking:
        raise BackendUnavailable(f"backend {name!r} cannot run on {device}: missing "
                                 f"{'; '.join(lacking)}; available on {device}: "
                                 f"{', '.join(available_backends(device)) or 'none'}")
    family = options.get("family", "hybridnets")
    if family != "hybridnets" and name == "torch2trt":
        raise BackendUnavailable(f"{name} runs HybridNets only here; run {family} with torch, "
                                 "onnxruntime, openvino or tensorrt")
    if isinstance(model, (str, Path)):
        from ..core.weights import build_model
        model = build_model(model)
    if name == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend(model, device=device, precision=precision,
                            **{k: options[k] for k in TORCH_OPTIONS if k in options})
    # Options of the other kind are ignored, so `auto` works with any combination.
    engine_options = {k: options[k] for k in ENGINE_OPTIONS if k in options}
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(model, device=device, precision=precision, **engine_options)
    if name == "openvino":
        from .openvino_backend import OpenVINOBackend
        return OpenVINOBackend(model, device=device, precision=precision, **engine_options)
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(model, device=device, precision=precision, **engine_options)
    from .torch2trt_backend import Torch2TRTBackend
    return Torch2TRTBackend(model, device=device, precision=precision, **engine_options)
