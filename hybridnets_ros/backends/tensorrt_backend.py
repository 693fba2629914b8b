"""TensorRT engines built from the project's ONNX export, run over device buffers.

Needs the ``tensorrt`` Python bindings (8.5 or newer: the tensor-name API) and a CUDA
device; imported only when this backend is chosen. One engine per (batch, input shape),
built at the first frame of that shape (or ahead with ``hybridnets export --format engine``)
and cached on disk under a key of GPU model and compute capability, TensorRT version, input
shape, batch, precision, weights digest and, for INT8, calibration frames (``engine_cache``).
An engine that fails to deserialize (another TensorRT, a damaged file) is rebuilt once.

Precision lives in the ONNX file from TensorRT 10 on (strongly typed networks, the only kind
TensorRT 11 builds): fp32 builds the export, fp16 its fp16 conversion
(``onnx_export.convert_to_fp16``), int8 the Q/DQ model quantised on calibration frames
(``quantize.cached_tensorrt_int8_onnx``). TensorRT 8.5-9.x builds weakly typed: the fp32
export with the FP16 flag, or the same Q/DQ model with the INT8 and FP16 flags. No implicit
calibrator is used (TensorRT 10 deprecates it, 11 removed it).

Buffers are allocated once per shape by :class:`CudaBuffers` (torch CUDA tensors, the
current stream); the input is bound directly when the caller passes a float32 tensor already
where the buffers live (the GPU data path), so a frame allocates nothing and copies nothing
to or from the host here. That class is the one seam for where buffers live: the tests run
this code against a TensorRT stand-in over host buffers (test/standins).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .engine_cache import EngineKey, gpu_identity
from .onnx_export import cached_fp16_onnx, cached_onnx, fp16_rule_id
from .base import Array, BackendSpec, BackendUnavailable, CachedEngineBackend, ShapeLru
from .torch_backend import require_cuda

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
WORKSPACE_BYTES = 1 << 30


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailable(
            f"missing Python module 'tensorrt' ({exc}): JetPack ships TensorRT's Python "
            "bindings (python3-libnvinfer); on a desktop `pip install tensorrt`") from None
    if major_minor(tensorrt) < (8, 5):
        raise BackendUnavailable(f"TensorRT {tensorrt.__version__} is too old: need 8.5 or "
                                 "newer (tensor-name API)")
    return tensorrt


def major_minor(trt) -> tuple[int, int]:
    major, minor = trt.__version__.split(".")[:2]
    return int(major), int(minor)


def strongly_typed(trt) -> bool:
    """Whether engines are built as strongly typed networks (precision from the ONNX types)."""
    return major_minor(trt) >= (10, 0)


class CudaBuffers:
    """Where the engine's inputs and outputs live: torch tensors on a CUDA device, run on
    its current stream."""

    def __init__(self, device: str, backend: str):
        if not device.startswith("cuda"):
            raise BackendUnavailable(f"{backend} runs on CUDA devices, not {device!r}")
        require_cuda(device, backend)
        self.device = device

    def identity(self) -> str:
        return gpu_identity(self.device)

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=self.device)

    def stream(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream

    def synchronize(self) -> None:
        torch.cuda.current_stream(self.device).synchronize()


def torch_dtype(trt, data_type) -> torch.dtype:
    """The torch dtype of a TensorRT DataType (the I/O types this project's engines have)."""
    table = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
             trt.DataType.INT32: torch.int32, trt.DataType.INT8: torch.int8,
             trt.DataType.BOOL: torch.bool}
    if data_type not in table:
        raise RuntimeError(f"engine tensor of type {data_type}: not one this backend binds")
    return table[data_type]


@dataclass
class _State:
    engine: object
    context: object
    buffers: dict[str, torch.Tensor]
    outputs: tuple[torch.Tensor, ...]   # in the network's output_names order


class TensorRTBackend(CachedEngineBackend):
    name = "tensorrt"
    kind = "tensorrt"  # cache key kind; torch2trt reuses everything else
    buffers_type = CudaBuffers

    def __init__(self, spec: BackendSpec):
        device, precision = spec.device, spec.precision
        self.buffers = self.buffers_type(device, self.name)
        self.trt = self._import()
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"{self.name} precision must be one of {PRECISIONS}")
        self._check_precision(precision)
        self._init_engine(dataclasses.replace(spec, device=self.buffers.device))
        # The Q/DQ model is calibrated for batch 1; fp32 and fp16 engines take any batch.
        self.batching = precision != "int8"
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self.engines: dict[tuple[int, int, int], _State] = ShapeLru(spec.max_engines)

    def _import(self):
        return import_tensorrt()

    def _check_precision(self, precision: str) -> None:
        """Raise BackendUnavailable if this TensorRT cannot build ``precision`` engines."""

    def runtime_id(self) -> str:
        return f"tensorrt {self.trt.__version__}"

    def recipe(self) -> str:
        """What else the engine depends on: the fp16 conversion's rule, where it is built
        from the fp16 ONNX file (a changed rule makes cached engines stale)."""
        return fp16_rule_id() if self.precision == "fp16" and strongly_typed(self.trt) else ""

    def engine_key(self, hw: tuple[int, int], frames: list[np.ndarray] | None,
                   batch: int = 1) -> EngineKey:
        from .quantize import frames_digest
        runtime = "; ".join(filter(None, (self.runtime_id(), self.recipe())))
        return EngineKey(self.kind, tuple(hw), self.precision, self.digest,
                         runtime=runtime, gpu=self.buffers.identity(),
                         calibration=frames_digest(frames) if frames else "", batch=batch)

    def prepare(self, input_hw: tuple[int, int], batch: int = 1) -> None:
        self._state((batch, *input_hw))

    def engine_path(self, hw: tuple[int, int], batch: int = 1) -> Path:
        """The engine for input ``hw`` in the cache, built first if there is no valid one."""
        frames = self.calibration_frames(hw) if self.precision == "int8" else None
        key = self.engine_key(hw, frames, batch)
        return self.cache.get_or_build(key, ".engine", lambda out: self._build(key, out, frames),
                                       f"{self.name} {self.precision} engine (takes minutes)")

    def onnx_path(self, key: EngineKey, frames: list[np.ndarray] | None) -> Path:
        """The ONNX file the engine of ``key`` is built from (see the module doc)."""
        if self.precision == "int8":
            from .quantize import cached_tensorrt_int8_onnx
            return cached_tensorrt_int8_onnx(self.model, self.adapter, key.input_hw, self.digest,
                                             frames, self.cache)
        if self.precision == "fp16" and strongly_typed(self.trt):
            return cached_fp16_onnx(self.model, self.adapter, key.input_hw, self.digest,
                                    self.cache, key.batch)
        return cached_onnx(self.model, self.adapter, key.input_hw, self.digest, self.cache,
                           key.batch)

    def _build(self, key: EngineKey, out: Path, frames: list[np.ndarray] | None) -> None:
        build_engine(self.trt, self.logger, self.onnx_path(key, frames), out, self.precision)

    def _state(self, shape: tuple[int, int, int]) -> _State:
        """The engine, its context and bound buffers for a (batch, H, W) input."""
        if shape in self.engines:
            return self.engines[shape]
        batch, *hw = shape
        engine = None
        for _ in range(2):
            path = self.engine_path(tuple(hw), batch)
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                break
            log.warning("%s could not load %s (other TensorRT or damaged): rebuilding", self.name,
                        path)
            self.cache.discard(path)
        if engine is None:
            raise RuntimeError(f"{self.name}: the freshly built engine for {shape} does not load")
        context = engine.create_execution_context()
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            tensor_shape = tuple(engine.get_tensor_shape(name))
            buffers[name] = self.buffers.empty(
                tensor_shape, torch_dtype(self.trt, engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT:
                context.set_input_shape(name, tensor_shape)
            context.set_tensor_address(name, buffers[name].data_ptr())
        wanted = (self.adapter.input_name, *self.adapter.output_names)
        if missing := [name for name in wanted if name not in buffers]:
            raise RuntimeError(f"{self.name}: the engine has no tensor {', '.join(missing)} "
                               f"(its tensors: {', '.join(buffers)})")
        self.engines[shape] = _State(engine, context, buffers,
                                     tuple(buffers[name] for name in self.adapter.output_names))
        return self.engines[shape]

    def infer(self, inputs: Array) -> tuple:
        state = self._state((inputs.shape[0], *inputs.shape[2:]))
        input_name = self.adapter.input_name
        image = state.buffers[input_name]
        if (isinstance(inputs, torch.Tensor) and inputs.device == image.device
                and inputs.dtype == image.dtype and inputs.is_contiguous()):
            state.context.set_tensor_address(input_name, inputs.data_ptr())  # no copy
        else:
            if isinstance(inputs, np.ndarray):
                inputs = torch.from_numpy(inputs)
            image.copy_(inputs)
            state.context.set_tensor_address(input_name, image.data_ptr())
        if not state.context.execute_async_v3(self.buffers.stream()):
            raise RuntimeError(f"{self.name}: engine execution failed (see the TensorRT log)")
        self.buffers.synchronize()
        return self.adapter.pack(state.outputs)

    def describe(self) -> str:
        return f"{self.runtime_id()} {self.precision} on {self.device}"


def build_engine(trt, logger, onnx_path: Path, out: Path, precision: str) -> None:
    """Parse the ONNX file and write a serialized engine to ``out``."""
    builder = trt.Builder(logger)
    typed = strongly_typed(trt)
    if typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:  # TensorRT 8.x/9.x: explicit batch must be asked for
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if not typed and precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # layers left unquantised run fp16, not fp32
    if not typed and precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantisation: the Q/DQ scales
    if hasattr(trt, "IProgressMonitor"):  # TensorRT 10 on: show the build's phases
        config.progress_monitor = make_progress_monitor(trt)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    out.write_bytes(bytes(serialized))
    log.info("TensorRT engine built in %.0f s", time.monotonic() - started)


def make_progress_monitor(trt):
    from tqdm import tqdm

    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.bars = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.bars[phase_name] = tqdm(total=num_steps, desc=f"TensorRT: {phase_name}",
                                         leave=parent_phase is None, position=len(self.bars))

        def step_complete(self, phase_name, step):
            bar = self.bars.get(phase_name)
            if bar is not None:
                bar.update(step - bar.n + 1)
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            bar = self.bars.pop(phase_name, None)
            if bar is not None:
                bar.close()

    return Progress()
