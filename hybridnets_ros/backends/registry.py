"""Choosing and constructing a backend by name: the one entry point for the CLI and the node.

``create_backend(name, model, adapter, device, precision)`` checks what the name needs before
importing anything heavy, so an unavailable choice fails at once with what is missing and
what would work here; ``auto`` logs what it picked and why. Every backend class is built
from one :class:`BackendSpec`.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging

import torch

from ..core.adapter import ModelAdapter
from .engine_choice import CANDIDATES, measured_choice, measured_size, rule_choice
from .base import Backend, BackendSpec, BackendUnavailable

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt", "torch2trt")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
# BackendSpec fields besides the model, the device and the precision
OPTIONS = tuple(f.name for f in dataclasses.fields(BackendSpec)
                if f.name not in ("model", "network", "device", "precision"))


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# Backends that run the network from its ONNX export (onnx_export needs the onnx package).
FROM_ONNX = ("onnxruntime", "openvino", "tensorrt")


def missing(name: str, device: str = "cpu") -> list[str]:
    """What ``name`` lacks to run on ``device`` here (empty: it can run)."""
    cuda = device.startswith("cuda")
    needs = []
    if name in FROM_ONNX and not _has_module("onnx"):
        needs.append("Python module 'onnx' (the ONNX export; pip install onnx)")
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


def choose_auto(device: str, precision: str, model: str | None = None,
                size: int | None = None) -> tuple[str, str]:
    """The best backend for ``device`` and a sentence saying why; on a CPU at fp32 the
    fastest exact engine for network ``model`` at letterbox ``size`` (None: a network whose
    input does not follow it), measured (engine_choice) or else by a rule."""
    if device.startswith("cuda"):
        for name in ("tensorrt", "torch2trt"):
            if not missing(name, device):
                return name, f"{name} is installed: TensorRT engines are the fastest on NVIDIA GPUs"
        skipped = "; ".join(f"{n}: missing {', '.join(missing(n, device))}"
                            for n in ("tensorrt", "torch2trt"))
        return "torch", f"no TensorRT here ({skipped})"
    if precision == "fp32":
        available = [n for n in CANDIDATES if not missing(n, device)]
        unavailable = "; ".join(f"{n} not used: missing {', '.join(missing(n, device))}"
                                for n in ("onnxruntime", "openvino") if n not in available)
        name, why = ((model and measured_choice(model, available, size))
                     or rule_choice(available))
        return name, why + (f"; {unavailable}" if unavailable else "")
    if precision == "bf16" and not missing("openvino", device):
        return "openvino", "the CPU backend with bf16"
    lacking = missing("onnxruntime", device)
    if precision == "int8" and not lacking:
        return "onnxruntime", "the CPU backend with INT8 (static QDQ)"
    reason = f"precision {precision}" if not lacking else f"missing {', '.join(lacking)}"
    return "torch", f"onnxruntime not used ({reason})"


def create_backend(name: str, model: torch.nn.Module, adapter: ModelAdapter,
                   device: str = "cpu", precision: str = "fp32", **options) -> Backend:
    """A backend by name: ``auto`` or one of BACKENDS, on ``device`` ("cpu", "cuda[:N]").

    ``model`` is a network's torch module; ``adapter`` that network's adapter: what its
    outputs are. ``options`` are BackendSpec's: ``calib`` (INT8
    calibration image folder), ``source_hw`` (camera resolution, for INT8 calibration),
    ``input_size``, ``cache`` (an EngineCache), ``digest`` (weights digest, if already
    known), and for torch ``optimize`` and ``cuda_graph``; each backend ignores those it
    does not use. Raises BackendUnavailable naming what is missing and what is available.
    """
    if precision not in PRECISIONS:
        raise BackendUnavailable(f"unknown precision {precision!r}; choose from "
                                 f"{', '.join(PRECISIONS)}")
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise TypeError(f"unknown backend option(s): {', '.join(sorted(unknown))}")
    if name == "auto":
        name, why = choose_auto(device, precision, adapter.name, measured_size(
            adapter, options.get("input_size", BackendSpec.input_size)))
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
    if name == "torch2trt" and not adapter.torch2trt_converts:
        raise BackendUnavailable(f"{name} has no converters for every layer of {adapter.name} "
                                 "here; run it with torch, onnxruntime, openvino or tensorrt")
    spec = BackendSpec(model, adapter, device, precision, **options)
    return backend_class(name)(spec)


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name`` (imported only now: each pulls in its library)."""
    if name == "torch":
        from .torch_backend import TorchBackend
        return TorchBackend
    if name == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend
    if name == "openvino":
        from .openvino_backend import OpenVINOBackend
        return OpenVINOBackend
    if name == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend
    from .torch2trt_backend import Torch2TRTBackend
    return Torch2TRTBackend
