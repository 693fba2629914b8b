"""Raw network outputs -> boxes in source-image pixels and a per-pixel class map.

Written with torch ops so one implementation serves CPU and CUDA tensors; numpy outputs
(ONNX Runtime) are wrapped without a copy. Conventions follow the reference exactly (see
``shared/golden/README.md``): centre/size box decoding, one-sided clipping to the input,
strict score threshold, class-wise NMS, pad removal and division by h/h0, and a mask
cropped by int(pad) on both sides then resized with nearest-neighbour.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch

from .nms import batched_nms
from .preprocess import Letterbox

log = logging.getLogger(__name__)

# Detections kept per image, highest scores first: EfficientDet's (HybridNets' detector)
# max_instances_per_image and COCO's maxDets. The reference keeps every NMS survivor.
MAX_DETECTIONS = 100
# NMS runs on at most this many best-scoring candidates per detection wanted: with a
# threshold near 0 every anchor is a candidate, and NMS over all of them does not fit a
# frame (docs/benchmarks.md). The result is the reference's first max_detections
# whenever NMS keeps that many among these candidates (or they were not cut at all).
CANDIDATES_PER_DETECTION = 30


@dataclass
class Detections:
    boxes: np.ndarray    # [n, 4] float32 (x1, y1, x2, y2) in source-image pixels
    scores: np.ndarray   # [n] float32, descending
    classes: np.ndarray  # [n] int64 class indices

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.scores)


def as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def decode_boxes(anchors: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Anchors (y1, x1, y2, x2) + deltas (dy, dx, dh, dw) -> boxes (x1, y1, x2, y2)."""
    ya = (anchors[:, 0] + anchors[:, 2]) / 2
    xa = (anchors[:, 1] + anchors[:, 3]) / 2
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    w = deltas[:, 3].exp() * wa
    h = deltas[:, 2].exp() * ha
    yc = deltas[:, 0] * ha + ya
    xc = deltas[:, 1] * wa + xa
    return torch.stack([xc - w / 2.0, yc - h / 2.0, xc + w / 2.0, yc + h / 2.0], dim=1)


def detect(regression, classification, anchors: torch.Tensor, letterbox: Letterbox,
           conf_threshold: float, iou_threshold: float,
           max_detections: int = MAX_DETECTIONS) -> Detections:
    """At most ``max_detections`` detections of one image from its [N,4] deltas, [N,C]
    scores and [N,4] anchors (a tensor on the outputs' device)."""
    regression, classification = as_tensor(regression), as_tensor(classification)
    scores, classes = classification.max(dim=1)
    # Decoding is element-wise, so thresholding first gives the reference's boxes while
    # decoding only the candidates.
    candidates = (scores > conf_threshold).nonzero().squeeze(1)
    if len(candidates) == 0:
        return Detections.empty()
    most = max_detections * CANDIDATES_PER_DETECTION
    if len(candidates) > most:
        # the best ones, in index order so NMS breaks score ties as it would without the cut
        best = torch.sort(scores[candidates], descending=True, stable=True).indices[:most]
        candidates = candidates[best.sort().values]
    anchors = anchors[candidates].to(regression.dtype)
    boxes = decode_boxes(anchors, regression[candidates])
    height, width = letterbox.input_hw
    boxes[:, 0].clamp_(min=0)
    boxes[:, 1].clamp_(min=0)
    boxes[:, 2].clamp_(max=width - 1)
    boxes[:, 3].clamp_(max=height - 1)
    scores, classes = scores[candidates], classes[candidates]
    keep = batched_nms(boxes.float(), scores.float(), classes, iou_threshold)
    if len(keep) > max_detections:
        _report_cap(len(keep), max_detections)
        keep = keep[:max_detections]
    boxes = boxes[keep].float().cpu().numpy()
    return Detections(scale_boxes(boxes, letterbox), scores[keep].float().cpu().numpy(),
                      classes[keep].cpu().numpy().astype(np.int64))


def _report_cap(found: int, cap: int) -> None:
    """Logs the first frame whose detections the cap cut, once per process (a run)."""
    if not _report_cap.done:
        _report_cap.done = True
        log.warning("max_detections=%d dropped at least %d detections of a frame (NMS kept %d "
                    "of its best candidates; the reference keeps every one): raise "
                    "--max-detections or the max_detections parameter to keep more. Later "
                    "frames are not reported.", cap, found - cap, found)


_report_cap.done = False


def scale_boxes(boxes: np.ndarray, letterbox: Letterbox) -> np.ndarray:
    """Network-input xyxy -> source-image xyxy, clipped to [0, w0] x [0, h0] (in place)."""
    boxes[:, [0, 2]] -= np.float32(letterbox.pad_w)
    boxes[:, [1, 3]] -= np.float32(letterbox.pad_h)
    boxes /= np.float32(letterbox.gain)
    h0, w0 = letterbox.source_hw
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h0)
    return boxes


def segmentation_labels(segmentation, letterbox: Letterbox, on_device: bool | None = None) -> np.ndarray:
    """[S,H,W] logits -> uint8 [h0,w0] class map (argmax, first index on ties).

    ``on_device`` (default: when the logits are on CUDA) resizes where the logits are and
    downloads only the final mask (the GPU data path); otherwise OpenCV resizes on the host.
    """
    seg = as_tensor(segmentation)
    crop_h, crop_w = letterbox.crop_margins()
    seg = seg[:, crop_h:seg.shape[1] - crop_h, crop_w:seg.shape[2] - crop_w]
    # A running "strictly greater" over the few classes is the first-index argmax, and
    # much faster than torch.argmax over a 3-long leading dim on CPU.
    labels = torch.zeros(seg.shape[1:], dtype=torch.uint8, device=seg.device)
    best = seg[0]
    for k in range(1, seg.shape[0]):
        labels.masked_fill_(seg[k] > best, k)
        best = torch.maximum(best, seg[k])
    h0, w0 = letterbox.source_hw
    if labels.is_cuda if on_device is None else on_device:
        return resize_nearest(labels, (h0, w0)).cpu().numpy()
    return cv2.resize(labels.cpu().numpy(), (w0, h0), interpolation=cv2.INTER_NEAREST)


@lru_cache(maxsize=16)
def _nearest_index(src: int, dst: int, device: torch.device) -> torch.Tensor:
    # OpenCV's INTER_NEAREST: source index floor(d * (1 / (dst / src))) in double.
    index = np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64), src - 1)
    return torch.from_numpy(index).to(device)


def resize_nearest(labels: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """cv2.resize(..., INTER_NEAREST) of a 2-D tensor, on the tensor's device."""
    rows = _nearest_index(labels.shape[0], size_hw[0], labels.device)
    cols = _nearest_index(labels.shape[1], size_hw[1], labels.device)
    return labels.index_select(0, rows).index_select(1, cols)
