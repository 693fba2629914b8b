"""TensorRT engines built from the project's ONNX export, run with device buffers.

Needs the ``tensorrt`` Python bindings (8.5 or newer: the tensor-name API) and a CUDA
device; imported only when this backend is chosen. One engine per input shape, built at
the first frame of that shape (or ahead with ``hybridnets export --format engine``) and
cached on disk under a key of GPU model and compute capability, TensorRT version, input
shape, precision, weights digest and, for INT8, calibration frames (``engine_cache``). An
engine that fails to deserialize (another TensorRT, a damaged file) is rebuilt once.

Buffers are torch CUDA tensors allocated once per shape; the input is bound directly when
the caller passes a float32 CUDA tensor (the GPU data path), so a frame allocates nothing
and copies nothing to or from the host here. Written against the TensorRT 8.5-10.x
Python API (TensorRT 11 dropped the fp16/int8 builder flags: fp32 only there) and the
ONNX this project exports; no TensorRT exists on the machine where it was written, so
only its cache keys and error paths are tested there.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from .engine_cache import EngineKey, gpu_identity
from .onnx_export import cached_onnx
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
    major_minor = tuple(int(v) for v in tensorrt.__version__.split(".")[:2])
    if major_minor < (8, 5):
        raise BackendUnavailable(f"TensorRT {tensorrt.__version__} is too old: need 8.5 or "
                                 "newer (tensor-name API)")
    return tensorrt


def unsupported_precision(version: str, precision: str) -> str | None:
    """Why this TensorRT cannot build ``precision`` engines here (None: it can)."""
    if int(version.split(".")[0]) >= 11 and precision != "fp32":
        return (f"TensorRT {version} removed the fp16/int8 builder flags and INT8 calibrators "
                "(strongly typed networks only); this project builds fp16/int8 engines with "
                "TensorRT 8.5-10.x, fp32 with any")
    return None


class TensorRTBackend(CachedEngineBackend):
    name = "tensorrt"
    kind = "tensorrt"  # cache key kind; torch2trt reuses everything else

    def __init__(self, spec: BackendSpec):
        device, precision = spec.device, spec.precision
        if not device.startswith("cuda"):
            raise BackendUnavailable(f"{self.name} runs on CUDA devices, not {device!r}")
        require_cuda(device, self.name)
        self.trt = self._import()
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"{self.name} precision must be one of {PRECISIONS}")
        reason = unsupported_precision(self.trt.__version__, precision)
        if reason:
            raise BackendUnavailable(reason)
        self._init_engine(spec)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        self._states: dict[tuple[int, int], tuple] = ShapeLru()

    def _import(self):
        return import_tensorrt()

    def runtime_id(self) -> str:
        return f"tensorrt {self.trt.__version__}"

    def engine_key(self, hw: tuple[int, int], frames: list[np.ndarray] | None) -> EngineKey:
        from .quantize import frames_digest
        return EngineKey(self.kind, tuple(hw), self.precision, self.digest,
                         runtime=self.runtime_id(), gpu=gpu_identity(self.device),
                         calibration=frames_digest(frames) if frames else "")

    def prepare(self, input_hw: tuple[int, int]) -> None:
        self._state(tuple(input_hw))

    def engine_path(self, hw: tuple[int, int]) -> Path:
        """The engine for input ``hw`` in the cache, built first if there is no valid one."""
        frames = self.calibration_frames(hw) if self.precision == "int8" else None
        key = self.engine_key(hw, frames)
        return self.cache.get_or_build(key, ".engine", lambda out: self._build(key, out, frames),
                                       f"{self.name} {self.precision} engine (takes minutes)")

    def _build(self, key: EngineKey, out: Path, frames: list[np.ndarray] | None) -> None:
        onnx_path = cached_onnx(self.model, key.input_hw, self.digest, self.cache, self.network)
        build_engine(self.trt, self.logger, onnx_path, out, self.precision, frames,
                     self.cache.root / key.filename(".calib"))

    def _state(self, hw: tuple[int, int]) -> tuple:
        if hw in self._states:
            return self._states[hw]
        engine = None
        for attempt in range(2):
            path = self.engine_path(hw)
            engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is not None:
                break
            log.warning("%s could not load %s (other TensorRT or damaged): rebuilding", self.name,
                        path)
            self.cache.discard(path)
        if engine is None:
            raise RuntimeError(f"{self.name}: the freshly built engine for {hw} does not load")
        context = engine.create_execution_context()
        buffers = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = torch.from_numpy(np.empty(0, self.trt.nptype(engine.get_tensor_dtype(name)))).dtype
            buffers[name] = torch.empty(tuple(engine.get_tensor_shape(name)), dtype=dtype,
                                        device=self.device)
            context.set_tensor_address(name, buffers[name].data_ptr())
        self._states[hw] = (engine, context, buffers)
        return self._states[hw]

    def infer(self, inputs: Array) -> tuple:
        _, context, buffers = self._state(tuple(inputs.shape[2:]))
        input_name = self.network.input_name
        image = buffers[input_name]
        if (isinstance(inputs, torch.Tensor) and inputs.is_cuda and inputs.dtype == image.dtype
                and inputs.is_contiguous()):
            context.set_tensor_address(input_name, inputs.data_ptr())  # no copy
        else:
            if isinstance(inputs, np.ndarray):
                inputs = torch.from_numpy(inputs)
            image.copy_(inputs)
            context.set_tensor_address(input_name, image.data_ptr())
        stream = torch.cuda.current_stream(image.device)
        if not context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.name}: engine execution failed (see the TensorRT log)")
        stream.synchronize()
        return self.network.pack(buffers[name] for name in self.network.output_names)

    def describe(self) -> str:
        return f"{self.runtime_id()} {self.precision} on {self.device}"


def build_engine(trt, logger, onnx_path: Path, out: Path, precision: str,
                 frames: list[np.ndarray] | None, calib_cache: Path) -> None:
    """Parse the ONNX file and write a serialized engine to ``out``."""
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:  # TensorRT 10 has only explicit batch
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = make_calibrator(trt, frames, calib_cache)
    if hasattr(trt, "IProgressMonitor"):  # TensorRT 10: show the build's phases
        config.progress_monitor = make_progress_monitor(trt)
    started = time.monotonic()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    out.write_bytes(bytes(serialized))
    log.info("TensorRT engine built in %.0f s", time.monotonic() - started)


def make_calibrator(trt, frames: list[np.ndarray], cache_path: Path):
    """An entropy calibrator over pre-processed frames; its table is kept in ``cache_path``
    so that a rebuild (new TensorRT, other precision flags) skips calibration."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.index = 0
            self.buffer = torch.empty(frames[0].shape, dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= len(frames):
                return None
            self.buffer.copy_(torch.from_numpy(frames[self.index]))
            self.index += 1
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self):
            return cache_path.read_bytes() if cache_path.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_path.write_bytes(bytes(cache))

    return Calibrator()


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
