"""HybridNets' raw outputs -> boxes in source-image pixels and a per-pixel class map.

Written with torch ops so one implementation serves CPU and CUDA tensors; numpy outputs
(ONNX Runtime) are wrapped without a copy. Conventions follow the reference exactly (see
``shared/golden/README.md``): centre/size box decoding, one-sided clipping to the input,
strict score threshold, class-wise NMS, pad removal and division by h/h0, and a mask
cropped by int(pad) on both sides then resized with nearest-neighbour.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from ...nms import batched_nms
from ...postprocess import (CANDIDATES_PER_DETECTION, MAX_DETECTIONS, Detections, as_tensor,
                            first_argmax, host_array, resize_nearest, max_softmax)
from ...preprocess import Letterbox

log = logging.getLogger(__name__)


def decode_boxes(anchors: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Anchors (y1, x1, y2, x2) + deltas (dy, dx, dh, dw) -> boxes (x1, y1, x2, y2)."""
    ya = (anchors[:, 0] + anchors[:, 2]) / 2
    xa = (anchors[:, 1] + anchors[:, 3]) / 2
    ha = anchors[:, 2] - anchors[:, 0]
    wa = anchors[:, 3] - anchors[:, 1]
    # A huge delta overflows to inf, as torch.exp in the reference (the clip then bounds the
    # box); not worth a warning per frame.
    with np.errstate(over="ignore"):
        w = np.exp(deltas[:, 3]) * wa
        h = np.exp(deltas[:, 2]) * ha
    yc = deltas[:, 0] * ha + ya
    xc = deltas[:, 1] * wa + xa
    return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)


def _candidates(regression, classification, anchors, conf_threshold: float, most: int,
                on_device: bool | None = None):
    """(deltas, scores, classes, anchors) of the anchors scoring above the threshold (at
    most ``most``, the best, in index order so that NMS breaks score ties as it would
    without the cut), as host arrays. ``on_device`` (default: for tensors on a GPU)
    selects them in torch where the outputs are, so that only the candidates come back."""
    if on_device is None:
        on_device = (isinstance(classification, torch.Tensor)
                     and classification.device.type != "cpu")
    if on_device:
        regression, classification, anchors = map(as_tensor, (regression, classification, anchors))
        scores, classes = classification.max(dim=1)
        index = (scores > conf_threshold).nonzero().squeeze(1)
        if len(index) > most:
            best = torch.sort(scores[index], descending=True, stable=True).indices[:most]
            index = index[best.sort().values]
        # fp16 outputs come back as float32: the host decodes in float32
        return (host_array(regression[index].float()), host_array(scores[index].float()),
                host_array(classes[index]), host_array(anchors[index].float()))
    classification = host_array(classification)
    if classification.shape[1] == 1:  # the released model: one class, no reduction
        scores = classification[:, 0]
        classes = np.zeros(len(scores), np.int64)
    else:
        classes = classification.argmax(axis=1)  # first index on ties, as torch.max
        scores = np.take_along_axis(classification, classes[:, None], 1)[:, 0]
    index = np.flatnonzero(scores > conf_threshold)
    if len(index) > most:
        index = index[np.sort(np.argsort(-scores[index], kind="stable")[:most])]
    return (host_array(regression)[index], scores[index], classes[index],
            host_array(anchors)[index])


def detect(regression, classification, anchors, letterbox: Letterbox,
           conf_threshold: float, iou_threshold: float,
           max_detections: int = MAX_DETECTIONS, on_device: bool | None = None) -> Detections:
    """At most ``max_detections`` detections of one image from its [N,4] deltas, [N,C]
    scores and [N,4] anchors (arrays, or tensors on the outputs' device; ``on_device``:
    see :func:`_candidates`)."""
    # Decoding is element-wise, so thresholding first gives the reference's boxes while
    # decoding only the candidates.
    deltas, scores, classes, anchors = _candidates(
        regression, classification, anchors, conf_threshold,
        max_detections * CANDIDATES_PER_DETECTION, on_device)
    if len(scores) == 0:
        return Detections.empty()
    boxes = decode_boxes(anchors.astype(deltas.dtype, copy=False), deltas)
    height, width = letterbox.input_hw
    # One-sided, as the reference: x1, y1 at least 0; x2, y2 at most the last pixel.
    np.clip(boxes, np.array([0, 0, -np.inf, -np.inf], boxes.dtype),
            np.array([np.inf, np.inf, width - 1, height - 1], boxes.dtype), out=boxes)
    keep = batched_nms(boxes, scores, classes, iou_threshold)
    if len(keep) > max_detections:
        _report_cap(len(keep), max_detections)
        keep = keep[:max_detections]
    return Detections(scale_boxes(boxes[keep].astype(np.float32), letterbox),
                      scores[keep].astype(np.float32), classes[keep].astype(np.int64))


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
    pad_w, pad_h = np.float32(letterbox.pad_w), np.float32(letterbox.pad_h)
    boxes -= np.array([pad_w, pad_h, pad_w, pad_h], np.float32)
    boxes /= np.float32(letterbox.gain)
    h0, w0 = letterbox.source_hw
    np.clip(boxes, 0, np.array([w0, h0, w0, h0], np.float32), out=boxes)
    return boxes


def segmentation_labels(segmentation, letterbox: Letterbox, on_device: bool | None = None) -> np.ndarray:
    """[S,H,W] logits -> uint8 [h0,w0] class map (argmax, first index on ties).

    ``on_device`` (default: when the logits are on CUDA) resizes where the logits are and
    downloads only the final mask (the GPU data path); otherwise OpenCV resizes on the host.
    """
    crop_h, crop_w = letterbox.crop_margins()
    h0, w0 = letterbox.source_hw
    if isinstance(segmentation, torch.Tensor) and (
            segmentation.is_cuda if on_device is None else on_device):
        seg = segmentation[:, crop_h:segmentation.shape[1] - crop_h,
                           crop_w:segmentation.shape[2] - crop_w]
        # A running "strictly greater" over the few classes is the first-index argmax,
        # much faster than torch.argmax over a short leading dim.
        labels = torch.zeros(seg.shape[1:], dtype=torch.uint8, device=seg.device)
        best = seg[0]
        for k in range(1, seg.shape[0]):
            labels.masked_fill_(seg[k] > best, k)
            best = torch.maximum(best, seg[k])
        return resize_nearest(labels, (h0, w0)).cpu().numpy()
    seg = host_array(segmentation)
    seg = seg[:, crop_h:seg.shape[1] - crop_h, crop_w:seg.shape[2] - crop_w]
    return cv2.resize(first_argmax(seg), (w0, h0), interpolation=cv2.INTER_NEAREST)


def segmentation_confidence(segmentation, letterbox: Letterbox) -> np.ndarray:
    """[S,H,W] softmax logits -> uint8 [h0,w0] probability of segmentation_labels' class:
    the highest softmax probability at the logits' resolution, resized as the labels are
    (nearest), so each pixel's value belongs to its label (on the host: only for
    subscribers)."""
    crop_h, crop_w = letterbox.crop_margins()
    h0, w0 = letterbox.source_hw
    seg = host_array(segmentation)
    seg = seg[:, crop_h:seg.shape[1] - crop_h, crop_w:seg.shape[2] - crop_w]
    return cv2.resize(max_softmax(seg), (w0, h0), interpolation=cv2.INTER_NEAREST)
