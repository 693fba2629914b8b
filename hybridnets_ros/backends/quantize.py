"""INT8 calibration data and ONNX Runtime static quantisation (QDQ, per-channel weights).

Calibration frames are real images from a folder, brought to the camera resolution and
pre-processed exactly like live frames, so they have the engine's static input shape. The
same frames serve ONNX Runtime's quantiser and TensorRT's INT8 calibrator.

Settings: QDQ format, weights int8 per output channel, activations uint8 with MinMax
ranges. U8S8 is the layout ONNX Runtime's VNNI kernels run fastest; on CPUs without VNNI it
can lose precision to saturation (see ONNX Runtime's quantisation docs). MinMax, because
Percentile and Entropy calibration kept no more of the fp32 outputs at twice the time
(docs/benchmarks.md).
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

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
                  input_name: str = "image") -> Path:
    """Static QDQ quantisation of an fp32 ONNX file, calibrated on ``frames``."""
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
        quantize_static(str(prepared), str(out_path), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    finally:
        prepared.unlink(missing_ok=True)
    return out_path


def cached_int8_onnx(model: torch.nn.Module, input_hw: tuple[int, int], digest: str,
                     frames: list[np.ndarray], cache: EngineCache | None = None,
                     network: ModelAdapter | None = None) -> Path:
    """The INT8 QDQ model for ``input_hw`` and these calibration frames, built if absent
    (``network``: the model's adapter, by default found from its class)."""
    from ..core.registry import adapter_of
    cache = cache or EngineCache()
    network = network or adapter_of(model)
    fp32 = cached_onnx(model, input_hw, digest, cache, network)
    from onnxruntime import __version__ as ort_version
    key = EngineKey("onnx-int8", tuple(input_hw), "int8", digest,
                    runtime=f"onnxruntime {ort_version} qdq u8s8 minmax",
                    calibration=frames_digest(frames))
    return cache.get_or_build(key, ".onnx",
                              lambda out: quantize_onnx(fp32, out, frames, network.input_name),
                              f"INT8 model ({len(frames)} calibration frames, ~30 s)")
