"""YOLOP (hustvl/YOLOP, MIT; Wu et al. 2022): cars, drivable area and lane lines (BDD100K).

The network (``network.YOLOP``) and the original ``tools/demo.py`` pre- and post-processing,
reproduced exactly where the original works:

    model = load_checkpoint(build_module(), "End-to-end.pth")
    x, letterbox = preprocess(bgr, 640)                 # float32 [1, 3, 384, 640] for 720p
    with torch.inference_mode():
        det, drivable, lane = model(torch.from_numpy(x))
    detections = detect(det, letterbox, 0.25, 0.45)     # boxes in image pixels, rounded
    drivable_mask, lane_mask = masks(drivable, lane, letterbox)   # uint8 0/1, image size

Conventions of the original (see ``shared/golden/yolop/README.md``):

* The input stays **B, G, R** (the original never swaps), normalised per channel with the
  ImageNet mean/std in R, G, B order, i.e. mean[0] applies to blue.
* Letterbox (``letterbox_for_img``): scale r = min(S / h0, S / w0), up-scaling allowed;
  INTER_AREA resize to round(side * r), skipped when the size is unchanged; pad with 114 to
  the next multiple of 32, split top/bottom as round(pad - 0.1) / round(pad + 0.1).
* Detections: objectness > threshold, score = objectness x class probability > threshold
  (both strict), NMS with torchvision's semantics, boxes mapped back with the gain
  min(H / h0, W / w0), clamped to [0, w0] x [0, h0] and rounded (half to even).
* Masks: the padding is cropped by int(pad) on both sides and the probabilities are
  upsampled bilinearly (align_corners=False); a pixel is foreground when its channel-1
  probability exceeds channel 0 (ties are background, as ``torch.max`` gives them).

One deviation: the original upsamples by the integer factor int(1 / ratio), which gives
the image size only when 1 / ratio is an integer (img_size 640 or 1280 on 1280x720; at 512
its mask is 576x1024 and the demo crashes). Here the probabilities are resized straight to
the image size: the same interpolation where the original's factor fits, the natural one
where it does not.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ...nms import batched_nms
from ...postprocess import CANDIDATES_PER_DETECTION, Detections, as_tensor
from ...preprocess import PAD_VALUE, Letterbox, normalisation_tables, normalise_into
from ...weights import load_checkpoint as _load_checkpoint
from .network import MAX_STRIDE, YOLOP

__all__ = ["CLASS_NAMES", "MAX_DETECTIONS", "MEAN", "OUTPUT_NAMES", "RELEASED_WEIGHTS_NAME",
           "STD", "YOLOP", "Preprocessor", "build_module", "detect", "letterbox", "load_checkpoint", "masks",
           "preprocess"]

CLASS_NAMES: tuple[str, ...] = ("car",)
RELEASED_WEIGHTS_NAME = "End-to-end.pth"
OUTPUT_NAMES = ("det", "drivable", "lane")  # the order YOLOP.forward returns them in
MEAN = (0.485, 0.456, 0.406)  # applied to the B, G, R planes in this order (see above)
STD = (0.229, 0.224, 0.225)
MAX_DETECTIONS = 300  # the original's max_det
MAX_NMS = 30000       # the original's cap on the boxes NMS sees

# uint8 value -> normalised float32 per input plane (B, G, R)
_NORMALISED = normalisation_tables(MEAN, STD)


def build_module() -> YOLOP:
    """The network with PyTorch's default initialisation, in eval mode."""
    return YOLOP().eval()


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Strict load of the released layout (``{'state_dict': ...}``) or a bare state dict;
    WeightsError (a ValueError) naming what does not fit (see core.weights.load_checkpoint)."""
    return _load_checkpoint(model, path, "YOLOP")


def letterbox(source_hw: tuple[int, int], size: int) -> Letterbox:
    """The original's letterbox geometry for an h0 x w0 image at img_size ``size``."""
    if size < MAX_STRIDE or size % MAX_STRIDE:
        raise ValueError(f"YOLOP's input size must be a multiple of {MAX_STRIDE} "
                         f"(at least {MAX_STRIDE}), got {size}")
    h0, w0 = map(int, source_hw)
    if h0 < 1 or w0 < 1:
        raise ValueError(f"image has no pixels ({w0}x{h0})")
    r = min(size / h0, size / w0)
    # max(1, ...): an extreme aspect ratio would round a side to 0, which cv2 cannot resize to
    w, h = max(1, int(round(w0 * r))), max(1, int(round(h0 * r)))
    pad_w, pad_h = (size - w) % MAX_STRIDE / 2, (size - h) % MAX_STRIDE / 2
    input_hw = (h + int(round(pad_h - 0.1)) + int(round(pad_h + 0.1)),
                w + int(round(pad_w - 0.1)) + int(round(pad_w + 0.1)))
    return Letterbox((h0, w0), (h, w), input_hw, pad_w, pad_h)


class Preprocessor:
    """BGR uint8 image -> the network input, written into a float32 [1, 3, H, W] buffer
    kept per image size (the next call overwrites it: consume or copy it first)."""

    def __init__(self, size: int = 640):
        letterbox((size, size), size)  # a bad size fails here, not at the first frame
        self.size = size
        self._letterbox: Letterbox | None = None
        self._buffer = np.empty(0, np.float32)

    def input_hw(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The network input size for images of ``image_hw``."""
        return letterbox(image_hw, self.size).input_hw

    def __call__(self, bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise ValueError(f"expected a uint8 [H, W, 3] BGR image, got {bgr.dtype} {bgr.shape}")
        if self._letterbox is None or self._letterbox.source_hw != bgr.shape[:2]:
            self._letterbox = letterbox(bgr.shape[:2], self.size)
            self._buffer = np.empty((1, 3, *self._letterbox.input_hw), np.float32)
            # The border is the same for every frame of this size: filled once.
            self._buffer[0] = _NORMALISED[:, PAD_VALUE, None, None]
        lb = self._letterbox
        h, w = lb.resized_hw
        resized = bgr if (h, w) == lb.source_hw else cv2.resize(bgr, (w, h),
                                                                interpolation=cv2.INTER_AREA)
        top, left = lb.top, lb.left
        normalise_into(resized, _NORMALISED, self._buffer[0, :, top:top + h, left:left + w],
                       swap_rb=False)  # B, G, R: no channel swap
        return self._buffer, lb


def preprocess(bgr: np.ndarray, size: int = 640) -> tuple[np.ndarray, Letterbox]:
    """uint8 BGR [H, W, 3] -> (float32 [1, 3, H', W'] in B, G, R order, its letterbox)."""
    return Preprocessor(size)(bgr)


def detect(det, lb: Letterbox, conf_threshold: float = 0.25, iou_threshold: float = 0.45,
           max_detections: int = MAX_DETECTIONS) -> Detections:
    """Detections of one image from Detect's decoded output ``det`` [1, A, 6] (or [A, 6]),
    boxes in source-image pixels, in NMS keep order (descending score)."""
    pred = as_tensor(det)
    if pred.ndim == 3 and pred.shape[0] == 1:
        pred = pred[0]
    if pred.ndim != 2 or pred.shape[1] != 6:
        raise ValueError(f"expected YOLOP's detections [1, A, 6], got {tuple(np.shape(det))}")
    pred = pred[pred[:, 4] > conf_threshold]
    scores = pred[:, 5] * pred[:, 4]
    passing = scores > conf_threshold
    pred, scores = pred[passing], scores[passing]
    most = min(MAX_NMS, max_detections * CANDIDATES_PER_DETECTION)
    if len(scores) > most:
        # the best ones, in index order so NMS breaks score ties as it would without the cut
        best = torch.sort(scores, descending=True, stable=True).indices[:most].sort().values
        pred, scores = pred[best], scores[best]
    if len(scores) == 0:
        return Detections.empty()
    xy, half_wh = pred[:, 0:2], pred[:, 2:4] / 2
    boxes = torch.cat((xy - half_wh, xy + half_wh), dim=1)
    classes = torch.zeros(len(scores), dtype=torch.int64, device=scores.device)
    keep = batched_nms(boxes, scores, classes, iou_threshold)[:max_detections]
    return Detections(scale_coords(boxes[keep], lb).round().cpu().numpy(),
                      scores[keep].cpu().numpy(), classes[keep].cpu().numpy())


def scale_coords(boxes: torch.Tensor, lb: Letterbox) -> torch.Tensor:
    """Input-tensor xyxy -> source-image xyxy as the original's ``scale_coords`` (a copy)."""
    (height, width), (h0, w0) = lb.input_hw, lb.source_hw
    gain = min(height / h0, width / w0)
    pad_x, pad_y = (width - w0 * gain) / 2, (height - h0 * gain) / 2
    boxes = boxes.clone()
    boxes[:, [0, 2]] -= pad_x
    boxes[:, [1, 3]] -= pad_y
    boxes /= gain
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clamp(0, w0)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clamp(0, h0)
    return boxes


def masks(drivable, lane, lb: Letterbox) -> tuple[np.ndarray, np.ndarray]:
    """The two [1, 2, H, W] probability maps -> (drivable, lane) uint8 0/1 masks [h0, w0]."""
    return masks_of(probabilities(drivable, lane, lb))


def probabilities(drivable, lane, lb: Letterbox) -> np.ndarray:
    """The two [1, 2, H, W] probability maps -> float32 [h0, w0, 4] at the image's size
    (drivable's two channels, then lane's)."""
    probs = torch.cat((as_tensor(drivable), as_tensor(lane)), dim=1)
    if probs.ndim != 4 or probs.shape[:2] != (1, 4) or tuple(probs.shape[2:]) != lb.input_hw:
        raise ValueError(f"expected two [1, 2, {lb.input_hw[0]}, {lb.input_hw[1]}] maps, got "
                         f"{tuple(np.shape(drivable))} and {tuple(np.shape(lane))}")
    crop_h, crop_w = lb.crop_margins()
    height, width = lb.input_hw
    probs = probs[0, :, crop_h:height - crop_h, crop_w:width - crop_w].float().cpu().numpy()
    # Resizing to the image size is the original's integer-factor upsampling wherever that
    # factor reaches the image size (same scale), and fits where it does not. OpenCV's
    # bilinear resize is PyTorch's align_corners=False one up to float rounding, and faster.
    h0, w0 = lb.source_hw
    return cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (w0, h0),
                      interpolation=cv2.INTER_LINEAR)


def masks_of(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(drivable, lane) uint8 0/1 masks of ``probabilities``' maps: each head's foreground
    channel above its background one."""
    return ((probs[..., 1] > probs[..., 0]).view(np.uint8),
            (probs[..., 3] > probs[..., 2]).view(np.uint8))


def label_confidence(probs: np.ndarray, drivable: np.ndarray, lane: np.ndarray) -> np.ndarray:
    """uint8 [h0, w0] probability (0-255) of each pixel's label from ``probabilities``'
    [h0, w0, 4] sigmoid outputs: each head's channel is a probability of its own (a
    sigmoid, not a softmax over the pair), so a lane pixel takes the lane head's lane
    channel, a road pixel the drivable head's road channel, the rest its background one."""
    chosen = np.where(lane, probs[..., 3], np.where(drivable, probs[..., 1], probs[..., 0]))
    return cv2.convertScaleAbs(chosen, alpha=255.0)
