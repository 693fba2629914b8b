"""ONNX Runtime: CPU, or CUDA / TensorRT execution providers where onnxruntime-gpu has them.

The model is exported to ONNX per input shape at the first frame of that shape (or by
``prepare``) and cached on disk (``engine_cache``), so later starts only load it. fp32
runs the export as is; int8 runs a static QDQ model calibrated on a folder of images
(``quantize``), for CPUs with VNNI. Sessions use all graph optimisations and
``torch.get_num_threads()`` intra-op threads (one knob for both libraries). I/O is bound
to buffers allocated once per shape, so a frame allocates nothing for its outputs.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .onnx_export import cached_onnx
from .base import Array, BackendSpec, BackendUnavailable, CachedEngineBackend, ShapeLru
from .torch_backend import require_cuda

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "int8")


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailable(f"missing Python module 'onnxruntime' ({exc}); install it "
                                 "with `pip install onnxruntime` (onnxruntime-gpu for CUDA)") from None
    return onnxruntime


def cuda_providers(ort) -> list[str]:
    """GPU execution providers of this onnxruntime build, best first."""
    have = ort.get_available_providers()
    return [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in have]


@dataclass
class _Session:
    session: object
    binding: object
    outputs: tuple          # preallocated output buffers, bound once


class OnnxRuntimeBackend(CachedEngineBackend):
    name = "onnxruntime"

    def __init__(self, spec: BackendSpec):
        device, precision = spec.device, spec.precision
        ort = import_onnxruntime()
        self.ort = ort
        require_cuda(device, "onnxruntime on 'cuda'")
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"onnxruntime runs fp32 or int8 here, not {precision!r} "
                                     "(fp16: tensorrt, torch2trt or torch on CUDA)")
        if device.startswith("cuda"):
            gpu = cuda_providers(ort)
            if not gpu:
                raise BackendUnavailable(
                    "onnxruntime on 'cuda' is missing the CUDAExecutionProvider (install "
                    f"onnxruntime-gpu); this onnxruntime {ort.__version__} has: "
                    f"{', '.join(ort.get_available_providers())}")
            if precision == "int8":
                raise BackendUnavailable("onnxruntime int8 runs on CPU (VNNI); on CUDA use "
                                         "tensorrt or torch2trt with precision int8")
            index = torch.device(device).index or 0
            self.providers = [(p, {"device_id": index}) for p in gpu] + ["CPUExecutionProvider"]
        else:
            self.providers = ["CPUExecutionProvider"]
        self._init_engine(spec)
        # fp32 exports take any static batch; INT8 models are calibrated for batch 1.
        self.batching = precision == "fp32"
        self.engines: dict[tuple[int, int, int], _Session] = ShapeLru(spec.max_engines)

    def prepare(self, input_hw: tuple[int, int], batch: int = 1) -> None:
        self._session((batch, *input_hw))

    def model_path(self, hw: tuple[int, int], batch: int = 1) -> Path:
        """The ONNX file run for input ``hw`` (exported/quantised into the cache if needed)."""
        if self.precision == "fp32":
            return cached_onnx(self.model, self.adapter, hw, self.digest, self.cache, batch)
        from .quantize import cached_int8_onnx
        return cached_int8_onnx(self.model, self.adapter, hw, self.digest,
                                self.calibration_frames(hw), self.cache)

    def _session(self, shape: tuple[int, int, int]) -> _Session:
        """The session for a (batch, H, W) input."""
        if shape in self.engines:
            return self.engines[shape]
        batch, *hw = shape
        path = self.model_path(tuple(hw), batch)
        started = time.monotonic()
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1  # one chain of ops: no parallel branches to run
        # Worker threads spin while a run is going (faster than sleeping) but stop when it
        # returns: left spinning they slow the post-processing that follows (benchmarks.md).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        session = self.ort.InferenceSession(str(path), options, providers=self.providers)
        on_gpu = session.get_providers()[0] != "CPUExecutionProvider"
        binding = session.io_binding()
        outputs = []
        for meta in session.get_outputs():
            out_shape = tuple(meta.shape)
            if on_gpu:
                out = torch.empty(out_shape, dtype=torch.float32, device=self.device)
                binding.bind_output(meta.name, "cuda", out.device.index or 0, np.float32,
                                    out_shape, out.data_ptr())
            else:
                out = np.empty(out_shape, np.float32)
                binding.bind_output(meta.name, "cpu", 0, np.float32, out_shape, out.ctypes.data)
            outputs.append(out)
        names = [meta.name for meta in session.get_outputs()]
        ordered = tuple(outputs[names.index(name)] for name in self.adapter.output_names)
        self.engines[shape] = _Session(session, binding, ordered)
        log.info("onnxruntime: %s session for input %dx%dx%d ready in %.1f s (%s)",
                 self.precision, batch, hw[1], hw[0], time.monotonic() - started,
                 ", ".join(session.get_providers()))
        return self.engines[shape]

    def infer(self, inputs: Array) -> tuple:
        state = self._session((inputs.shape[0], *inputs.shape[2:]))
        if isinstance(inputs, torch.Tensor) and inputs.is_cuda:
            inputs = inputs.float().contiguous()
            state.binding.bind_input(self.adapter.input_name, "cuda", inputs.device.index or 0, np.float32,
                                     tuple(inputs.shape), inputs.data_ptr())
        else:
            if isinstance(inputs, torch.Tensor):
                inputs = inputs.numpy()
            state.binding.bind_cpu_input(self.adapter.input_name,
                                         np.ascontiguousarray(inputs, np.float32))
        state.session.run_with_iobinding(state.binding)
        return self.adapter.pack(state.outputs)

    def describe(self) -> str:
        providers = [p if isinstance(p, str) else p[0] for p in self.providers]
        where = (f"cpu, {torch.get_num_threads()} threads" if self.device == "cpu"
                 else f"{self.device} via {providers[0]}")
        return f"onnxruntime {self.ort.__version__} {self.precision} on {where}"
