"""HybridNets-D3 (BDD100K) as the package sees it: letterbox pre-processing, anchors, box
decoding and NMS, and the class map with its drivable-area and lane masks."""
from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import torch

from ...adapter import DETECTIONS, LANE, SEMANTIC, BenchPath, DetectionSettings, ModelAdapter, Result
from ...lru import ShapeLru
from ...postprocess import as_tensor
from ...preprocess import Letterbox
from ...surfaces import MaskSurfaces
from .anchors import generate_anchors
from .hybridnets import HybridNets
from .postprocess import detect, segmentation_confidence, segmentation_labels
from .preprocess import Preprocessor
from .spec import BDD100K, SEG_LANE, SEG_ROAD
from .torch_preprocess import TorchPreprocessor
from .weights import CHECKPOINT_LABEL, RELEASE_URL, WEIGHTS_FILENAME
from .weights import load_module as load_hybridnets

# The raw outputs for a batch: [B,N,4] box deltas, [B,N,C] scores, [B,S,H,W] logits.
RawOutputs = namedtuple("RawOutputs", ("regression", "classification", "segmentation"))


class HybridNetsPostprocessor:
    """Anchors per input size (and device), detections, the class map and its masks."""

    def __init__(self, on_device: bool = False):
        self.on_device = on_device
        self._anchors: dict[tuple, torch.Tensor] = ShapeLru()

    def __call__(self, outputs, index: int, letterbox: Letterbox, image_hw,
                 settings: DetectionSettings, confidence: bool = False) -> Result:
        regression = as_tensor(outputs[0])[index]
        key = (letterbox.input_hw, regression.device)
        if key not in self._anchors:
            self._anchors[key] = torch.from_numpy(
                generate_anchors(letterbox.input_hw, BDD100K).copy()).to(regression.device)
        detections = detect(regression, outputs[1][index], self._anchors[key], letterbox,
                            settings.conf_threshold, settings.iou_threshold,
                            settings.max_detections, self.on_device)
        seg_mask = segmentation_labels(outputs[2][index], letterbox, self.on_device)
        # The segmentation head's classes are exclusive (trained with a softmax).
        scores = segmentation_confidence(outputs[2][index], letterbox) if confidence else None
        return Result(detections, seg_mask, drivable_mask=seg_mask == SEG_ROAD,
                      lane_mask=seg_mask == SEG_LANE, confidence=scores)


class HybridNetsAdapter(ModelAdapter):
    name = "hybridnets"
    method = "HybridNets (BDD100K)"
    summary = "cars, drivable area, lanes"
    detection_classes = BDD100K.class_names
    seg_classes = BDD100K.seg_class_names
    # The overlay's tints (background untouched), as RGB.
    seg_colors_rgb = ((0, 0, 0), (75, 180, 60), (255, 215, 0))
    products = frozenset({DETECTIONS, SEMANTIC, LANE})
    drivable_classes = ("road", "lane")
    obstacle_classes = ("background",)
    tint_background = False
    weights_name = WEIGHTS_FILENAME
    weights_source = "the original project's GitHub release v1.0 (datvuthanh/HybridNets)"
    weights_url = RELEASE_URL
    checkpoint_label = CHECKPOINT_LABEL
    output_names = RawOutputs._fields
    input_multiple = BDD100K.max_stride
    uses_input_size = True
    int8_calibration = True
    torch2trt_converts = True
    batches_cameras = True
    processing_on_device = True

    def build_module(self, **_) -> HybridNets:
        return HybridNets(BDD100K.network)

    def load_module(self, weights: str | Path | None, **_) -> HybridNets:
        # Its random weights are calibrated on the synthetic road (weights.random_init).
        return load_hybridnets(weights, random_weights=weights is None)

    def pack(self, outputs) -> RawOutputs:
        return RawOutputs(*outputs)

    def onnx_metadata(self) -> dict[str, str]:
        return {**super().onnx_metadata(), "mean_rgb": ",".join(map(str, BDD100K.mean_rgb)),
                "std_rgb": ",".join(map(str, BDD100K.std_rgb))}

    def export_extras(self, onnx_path: Path, input_hw: tuple[int, int]) -> list[Path]:
        """Anchors [N,4] (y1, x1, y2, x2) beside the file: pure geometry, not in the graph."""
        path = onnx_path.with_suffix(".anchors.npy")
        np.save(path, generate_anchors(tuple(input_hw), BDD100K))
        return [path]

    def preprocessor(self, input_size: int, device: str = "cpu", on_device: bool = False,
                     **_) -> Preprocessor | TorchPreprocessor:
        if on_device:
            return TorchPreprocessor(input_size, BDD100K, device=device)
        return Preprocessor(input_size, BDD100K)

    def postprocessor(self, on_device: bool = False, **_) -> HybridNetsPostprocessor:
        return HybridNetsPostprocessor(on_device)

    def surfaces(self, config) -> MaskSurfaces:
        return MaskSurfaces()

    def bench_paths(self, config):
        # The opt-in fast path on every CPU: a lower letterbox size on the fastest engines,
        # its fidelity against the exact size beside it. 7/10 (448 for 640) because the
        # input is padded to multiples of 128: 16:9 frames then run at 256x512, 0.53x the
        # FLOPs of 384x640 (480 or 512 would still run at 384x512).
        fast = config.input_size * 7 // 10 // 32 * 32
        return (BenchPath("", {}),
                BenchPath(f" size {fast}", {"input_size": fast},
                          ("onnxruntime:fp32", "openvino:fp32")))

    def bench_backends(self, device: str) -> tuple[str, ...]:
        if device.startswith("cuda"):
            return ("torch-eager:fp32", "torch:fp32", "torch:fp16", "torch-cudagraph:fp16",
                    "onnxruntime:fp32", "tensorrt:fp16", "torch2trt:fp16")
        return ("torch-eager:fp32", "torch:fp32", "onnxruntime:fp32", "onnxruntime:int8",
                "openvino:fp32", "openvino:bf16", "openvino:int8")
