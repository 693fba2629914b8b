"""OpenVINO on the CPU: fp32 (exact), bf16 (AVX512-BF16 / AMX only) and int8 (NNCF).

The network is read from the cached fp32 ONNX export of each input shape
(``onnx_export.cached_onnx``) and compiled for that static shape with the latency hint and
``torch.get_num_threads()`` threads (one knob for every library). fp32 pins the inference
precision to f32: on CPUs with AMX or AVX512-BF16 OpenVINO would otherwise run bf16 by
default, which is not exact. int8 is NNCF post-training quantisation on calibration frames
(``quantize.calibration_frames``, the ones onnxruntime and TensorRT use); the quantised
model is kept in the engine cache. The compiled model is exported (``export_model``) into
the engine cache too, as ``openvino-<precision>-<H>x<W>-<digest>.blob`` with its sidecar,
so a second start imports it instead of compiling again, and only after its sha256 matched:
OpenVINO's own ``CACHE_DIR`` imports a damaged blob without a word (issue 31: 4 KiB of
noise in one gave 2 boxes and empty masks instead of 60 boxes).
"""
from __future__ import annotations

import importlib.util
import io
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import Array, BackendSpec, BackendUnavailable, CachedEngineBackend, ShapeLru
from .build_lock import exclusive
from .cpu import cpu_flags, cpu_name
from .engine_cache import EngineKey
from .onnx_export import cached_onnx, onnx_key

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
INFERENCE_PRECISION = {"fp32": "f32", "bf16": "bf16",
                       "int8": "f32"}  # int8: layers left unquantised stay exact
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # native bf16 arithmetic; anything else emulates


def import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailable(f"missing Python module 'openvino' ({exc}); install it with "
                                 "`pip install openvino` (x86-64)") from None
    return openvino


def bf16_unsupported(core) -> str | None:
    """Why this CPU cannot run bf16 natively (None: it can)."""
    native = sorted(cpu_flags().intersection(BF16_CPU_FLAGS))
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if native and "BF16" in capabilities:
        return None
    return (f"openvino bf16 needs a CPU with native bf16 ({' or '.join(BF16_CPU_FLAGS)} in "
            f"/proc/cpuinfo; this {cpu_name()} has {', '.join(native) or 'neither'}; OpenVINO's "
            f"CPU capabilities: {', '.join(capabilities)}): use precision fp32 here")


def quantize_openvino(onnx_path: Path, out_path: Path, frames: list[np.ndarray], core) -> Path:
    """NNCF post-training quantisation of the ONNX model, calibrated on ``frames``, written
    as one .npz (the OpenVINO IR's .xml and .bin) so the engine cache keeps a single file."""
    import nncf
    import openvino

    with exclusive("NNCF quantisation"):
        quantized = nncf.quantize(core.read_model(str(onnx_path)), nncf.Dataset(frames),
                                  subset_size=len(frames))
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "model.xml"
        openvino.save_model(quantized, str(xml), compress_to_fp16=False)
        with open(out_path, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, xml=np.frombuffer(xml.read_bytes(), np.uint8),
                     bin=np.frombuffer(xml.with_suffix(".bin").read_bytes(), np.uint8))
    return out_path


def read_packed_ir(core, path: Path):
    with np.load(path) as packed:
        xml, weights = packed["xml"].tobytes(), packed["bin"]
    from openvino import Tensor
    return core.read_model(xml, Tensor(weights))


def export_blob(compiled, out: Path) -> None:
    """Write a compiled model as ``core.import_model`` reads it back."""
    stream = io.BytesIO()  # the one stream type export_model writes to
    compiled.export_model(stream)
    out.write_bytes(stream.getbuffer())


@dataclass
class _Compiled:
    request: object
    outputs: tuple      # OpenVINO's output tensors, overwritten by every inference


class OpenVINOBackend(CachedEngineBackend):
    name = "openvino"

    def __init__(self, spec: BackendSpec):
        device, precision = spec.device, spec.precision
        self.ov = import_openvino()
        if device != "cpu":
            raise BackendUnavailable(f"openvino runs on the CPU here, not {device!r} (on NVIDIA "
                                     "GPUs use tensorrt)")
        if precision not in PRECISIONS:
            raise BackendUnavailable(f"openvino runs {', '.join(PRECISIONS)}, not {precision!r} "
                                     "(fp16: tensorrt, torch2trt or torch on CUDA)")
        self.core = self.ov.Core()
        if precision == "bf16" and (reason := bf16_unsupported(self.core)):
            raise BackendUnavailable(reason)
        if precision == "int8" and importlib.util.find_spec("nncf") is None:
            raise BackendUnavailable("openvino int8 needs the Python module 'nncf' (pip install "
                                     "nncf), or use onnxruntime int8")
        self._init_engine(spec)
        # fp32/bf16 compile the fp32 export of any static batch; INT8 is calibrated for 1.
        self.batching = precision != "int8"
        self.engines: dict[tuple[int, int, int], _Compiled] = ShapeLru(spec.max_engines)

    def prepare(self, input_hw: tuple[int, int], batch: int = 1) -> None:
        self._compiled_for((batch, *input_hw))

    def _config(self) -> dict:
        return {"PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": torch.get_num_threads(),
                "INFERENCE_PRECISION_HINT": INFERENCE_PRECISION[self.precision]}

    def _int8_key(self, hw: tuple[int, int], frames: list[np.ndarray]) -> EngineKey:
        """The key of the NNCF-quantised model for input ``hw``."""
        from .quantize import frames_digest
        import nncf
        return EngineKey("openvino-int8", tuple(hw), "int8", self.digest,
                         runtime=f"openvino {self.ov.__version__} nncf {nncf.__version__}",
                         calibration=frames_digest(frames))

    def compile_key(self, hw: tuple[int, int], batch: int = 1,
                    frames: list[np.ndarray] | None = None) -> EngineKey:
        """The key of the compiled model for input ``hw``: what it is compiled from (the
        ONNX export's key, or the INT8 model's and its calibration ``frames``), by which
        OpenVINO on which CPU, with which settings."""
        source = (self._int8_key(hw, frames) if self.precision == "int8"
                  else onnx_key(hw, self.digest, self.adapter, batch))
        settings = ", ".join(f"{k} {v}" for k, v in self._config().items())
        return EngineKey("openvino", tuple(hw), self.precision, self.digest,
                         runtime=(f"openvino {self.ov.__version__} on {cpu_name()} ({settings}) "
                                  f"from {source.kind} ({source.runtime})"),
                         calibration=source.calibration, batch=batch)

    def _source_model(self, hw: tuple[int, int], batch: int,
                      frames: list[np.ndarray] | None) -> object:
        """What to compile for ``hw``: the ONNX export's path, or the INT8 model."""
        onnx_path = cached_onnx(self.model, self.adapter, hw, self.digest, self.cache, batch)
        if self.precision != "int8":
            return str(onnx_path)
        key = self._int8_key(hw, frames)
        path = self.cache.get_or_build(
            key, ".npz", lambda out: quantize_openvino(onnx_path, out, frames, self.core),
            f"OpenVINO INT8 model (NNCF, {len(frames)} calibration frames)")
        return read_packed_ir(self.core, path)

    def _compiled_for(self, shape: tuple[int, int, int]) -> _Compiled:
        """The compiled model for a (batch, H, W) input: imported from the engine cache
        where a valid one is there, else compiled and exported there."""
        if shape in self.engines:
            return self.engines[shape]
        batch, *hw = shape
        hw = tuple(hw)
        frames = self.calibration_frames(hw) if self.precision == "int8" else None
        key = self.compile_key(hw, batch, frames)
        with self.cache.locked(key, ".blob"):
            started = time.monotonic()
            compiled, how = self._import(key), "imported"
            if compiled is None:
                source = self._source_model(hw, batch, frames)
                started = time.monotonic()  # the export, if any, logged its own time
                compiled = self.core.compile_model(source, "CPU", self._config())
                path = self.cache.store(key, ".blob", lambda out: export_blob(compiled, out))
                how = "compiled"
            else:
                path = self.cache.path(key, ".blob")
        request = compiled.create_infer_request()
        outputs = tuple(request.get_tensor(compiled.output(name))
                        for name in self.adapter.output_names)
        self.engines[shape] = _Compiled(request, outputs)
        log.info("openvino: %s model for input %dx%dx%d %s in %.1f s (%s)", self.precision,
                 batch, hw[1], hw[0], how, time.monotonic() - started, path)
        return self.engines[shape]

    def _import(self, key: EngineKey):
        """The compiled model from the engine cache, if a valid one is there (the bytes
        imported are the bytes checked against the sidecar's sha256)."""
        data = self.cache.read(key, ".blob")
        if data is None:
            return None
        try:
            return self.core.import_model(data, "CPU", self._config())
        except RuntimeError as exc:  # e.g. written by another OpenVINO build
            path = self.cache.path(key, ".blob")
            reason = str(exc).strip().splitlines()[-1]  # OpenVINO's own check, last line
            log.warning("openvino cannot import cached %s (%s); it will be compiled again",
                        path.name, reason)
            self.cache.discard(path)
            return None

    def infer(self, inputs: Array) -> tuple:
        state = self._compiled_for((inputs.shape[0], *inputs.shape[2:]))
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.numpy()
        state.request.infer({self.adapter.input_name: np.ascontiguousarray(inputs, np.float32)},
                            share_inputs=True, share_outputs=True)
        return self.adapter.pack(tensor.data for tensor in state.outputs)

    def describe(self) -> str:
        return (f"openvino {self.ov.__version__.split('-')[0]} {self.precision} on cpu, "
                f"{torch.get_num_threads()} threads")
