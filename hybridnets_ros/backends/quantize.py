"""INT8 calibration data and ONNX Runtime static quantisation (QDQ, per-channel weights).

Calibration frames are real images from a folder, brought to the camera resolution and
pre-processed exactly like live frames, so they have the engine's static input shape. The
same frames calibrate ONNX Runtime's model and the Q/DQ model TensorRT builds int8
engines from (signed, symmetric activations: the form TensorRT's explicit quantisation takes).

Settings: QDQ format, weights int8 per output channel (7-bit on CPUs without VNNI, where
8-bit weights saturate ONNX Runtime's kernels), activations uint8 with MinMax ranges. U8S8
is the layout ONNX Runtime's x86-64 kernels run fastest. MinMax rather than Percentile or
Entropy calibration: docs/benchmarks.md has the comparison.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from .cpu import has_int8_dot_product
from .engine_cache import EngineCache, EngineKey
from .onnx_export import cached_onnx
from ..core.adapter import ModelAdapter, Preprocessor

log = logging.getLogger(__name__)

MAX_CALIBRATION_FRAMES = 32  # the quantiser's time grows with it; 6-32 frames are typical


class CalibrationError(ValueError):
    """No usable calibration images; the message says where it looked."""


def calibration_frames(folder: str | Path, source_hw: tuple[int, int],
                       preprocessor: Preprocessor,
                       limit: int = MAX_CALIBRATION_FRAMES) -> list[np.ndarray]:
    """Network inputs [1,3,H,W] float32 (``preprocessor``'s) from the images of ``folder``
    (sorted; at most ``limit``, evenly spread), each first resized to the camera
    resolution ``source_hw``."""
    from ..core.sources import InputError, expand_sources, read_image

    sources, _ = expand_sources([str(folder)])
    images = [s.path for s in sources if s.kind == "image"]
    if not images:
        raise CalibrationError(f"no calibration images in {folder} (INT8 needs a folder of "
                               "frames like the camera's: --calib DIR)")
    if len(images) > limit:
        images = [images[i] for i in np.linspace(0, len(images) - 1, limit).round().astype(int)]
    frames, skipped = [], []
    h0, w0 = source_hw
    for path in images:
        try:
            image = read_image(path)
        except InputError as exc:
            skipped.append(str(exc))
            continue
        if image.shape[:2] != (h0, w0):
            image = cv2.resize(image, (w0, h0), interpolation=cv2.INTER_AREA)
        frames.append(np.array(preprocessor(image)[0]))
    for message in skipped:
        log.warning("calibration: skipped %s", message)
    if not frames:
        raise CalibrationError(f"none of the {len(images)} images in {folder} could be read")
    return frames


def assumed_camera(input_hw: tuple[int, int],
                   input_hw_of: Callable[[tuple[int, int]], tuple[int, int]]) -> tuple[int, int]:
    """A camera resolution for calibration when the real one is not known yet (the backend
    sees only the network input): 1280x720 if the pre-processing (``input_hw_of``: image
    size -> network input size) gives ``input_hw`` for it (the common case), else
    ``input_hw`` itself. Callers that know the camera pass its resolution instead."""
    for candidate in ((720, 1280), tuple(input_hw)):
        if tuple(input_hw_of(candidate)) == tuple(input_hw):
            return candidate
    return tuple(input_hw)


def frames_digest(frames: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for frame in frames:
        digest.update(np.ascontiguousarray(frame))
    return digest.hexdigest()


def quantize_onnx(fp32_path: Path, out_path: Path, frames: list[np.ndarray],
                  reduce_range: bool | None = None, for_tensorrt: bool = False,
                  input_name: str = "image") -> Path:
    """Static QDQ quantisation of an fp32 ONNX file, calibrated on ``frames``.

    ``reduce_range`` (default: on CPUs without an int8 dot product, see
    :func:`cpu.has_int8_dot_product`) keeps weights within 7 bits: ONNX Runtime's AVX2 u8s8
    kernel adds pairs of u8 x s8 products in int16, which saturates at full-range weights
    (255 x 127 x 2 > 32767) and costs several times the quantisation error; 7 bits never do.

    ``for_tensorrt``: the Q/DQ form TensorRT's explicit quantisation takes: activations
    signed int8 and symmetric (zero point 0), full-range weights, biases left in float
    (TensorRT quantises int8 only, and fuses the bias itself)."""
    if reduce_range is None:
        reduce_range = not for_tensorrt and not has_int8_dot_product()
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quant_pre_process, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._frames = iter(frames)

        def get_next(self):
            frame = next(self._frames, None)
            return None if frame is None else {input_name: frame}

    # The quantiser wants shape-inferred, BN-folded input (ONNX Runtime's recommended
    # pre-processing step); it is written next to the output and removed afterwards.
    prepared = out_path.with_name(out_path.name + ".prep.onnx")
    try:
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        activations = QuantType.QInt8 if for_tensorrt else QuantType.QUInt8
        extra = ({"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}
                 if for_tensorrt else {})
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=activations,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        reduce_range=reduce_range, extra_options=extra)
    finally:
        prepared.unlink(missing_ok=True)
    return out_path


def cached_int8_onnx(model: torch.nn.Module, adapter: ModelAdapter, input_hw: tuple[int, int],
                     digest: str, frames: list[np.ndarray],
                     cache: EngineCache | None = None) -> Path:
    """The INT8 QDQ model of ``model`` (the module of ``adapter``'s network) for
    ``input_hw`` and these calibration frames, built if absent."""
    cache = cache or EngineCache()
    fp32 = cached_onnx(model, adapter, input_hw, digest, cache)
    from onnxruntime import __version__ as ort_version
    weights = "s8" if has_int8_dot_product() else "s7"
    key = EngineKey("onnx-int8", tuple(input_hw), "int8", digest,
                    runtime=f"onnxruntime {ort_version} qdq u8{weights} minmax",
                    calibration=frames_digest(frames))
    return cache.get_or_build(key, ".onnx",
                              lambda out: quantize_onnx(fp32, out, frames, weights == "s7",
                                                        input_name=adapter.input_name),
                              f"INT8 model ({len(frames)} calibration frames, ~30 s)")


def cached_tensorrt_int8_onnx(model: torch.nn.Module, adapter: ModelAdapter,
                              input_hw: tuple[int, int], digest: str,
                              frames: list[np.ndarray], cache: EngineCache | None = None) -> Path:
    """The Q/DQ model TensorRT builds int8 engines from (``quantize_onnx(for_tensorrt=True)``),
    for ``input_hw`` and these calibration frames, built if absent."""
    cache = cache or EngineCache()
    fp32 = cached_onnx(model, adapter, input_hw, digest, cache)
    from onnxruntime import __version__ as ort_version
    key = EngineKey("onnx-int8-tensorrt", tuple(input_hw), "int8", digest,
                    runtime=f"onnxruntime {ort_version} qdq s8s8 symmetric minmax",
                    calibration=frames_digest(frames))
    return cache.get_or_build(key, ".onnx",
                              lambda out: quantize_onnx(fp32, out, frames, for_tensorrt=True,
                                                        input_name=adapter.input_name),
                              f"TensorRT INT8 Q/DQ model ({len(frames)} calibration frames)")
