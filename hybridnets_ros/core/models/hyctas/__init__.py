"""HyCTAS real-time semantic segmentation (Cityscapes, 19 train-id classes): network, weights,
pre- and post-processing. Pure PyTorch/NumPy/OpenCV: no ROS, no network access.

    model = load_checkpoint(build_module("S"), "hyctas_s.pth")
    tensor, crop = preprocess(bgr)                       # [1,3,1024,2048], the evaluation path
    with torch.inference_mode():
        logits = model(torch.from_numpy(tensor))         # [1,19,256,512], stride 4
    train_ids = postprocess(logits, crop, bgr.shape[:2])  # uint8 [H,W]

Two input paths:
- "reference", the original evaluation (train.py validation()): the RGB image is padded at the
  bottom and right with the mean colour (123,116,103) to 1024x2048, without resizing. The reference
  would crop an image larger than that at a random offset; here it is instead scaled down (area
  interpolation, aspect kept) to fit, and the class map is scaled back (nearest).
- "native": padded the same way but only up to a multiple of STRIDE (720x1280 stays 720x1280),
  about half the cost of the reference path. The result is not the reference's: the attention
  and the fusion's channel gate are global (they see the padding in the reference path), and
  where a side is not a multiple of 64 some half-resolution resamplings are not exact 2x ones.
  pad_multiple=64 keeps every resampling exact for a few percent more work. Compare the two
  paths on your data before switching: with the golden (random, very sensitive) weights they
  agree on only about a third of case_1's pixels (half with pad_multiple=64).

The architectures ship in arch/ (copies of the authors' train/jsons); see network.py for the
architecture and the conventions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...postprocess import first_argmax, max_softmax
from ...preprocess import normalisation_tables, normalise_into
from ...weights import load_checkpoint as _load_checkpoint
from .network import NUM_CLASSES, HyCTAS, load_architecture

__all__ = [
    "ARCHITECTURES", "ARCH_DIR", "CLASS_COLORS_RGB", "CLASS_NAMES", "MEAN_RGB", "NUM_CLASSES",
    "PAD_RGB", "REFERENCE_HW", "STD_RGB", "STRIDE", "CropInfo", "HyCTAS", "build_module",
    "load_checkpoint", "postprocess", "preprocess",
]

CLASS_NAMES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
# The Cityscapes palette (cityscapesscripts labels.py), in train-id order.
CLASS_COLORS_RGB = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
    (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

ARCH_DIR = Path(__file__).resolve().parent / "arch"
# The repository spells the L file with another case; the names are kept as published.
ARCHITECTURES = {"S": "HRTNET_S.json", "M": "HRTNET_M.json", "L": "HRTNet_L.json"}

# Input sides of an unpadded ("native") input must be multiples of this: the head's attention
# halves the 1/8 map and doubles it back, so the 1/8 map needs even sides.
STRIDE = 16
REFERENCE_HW = (1024, 2048)
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
PAD_RGB = (123, 116, 103)  # int(255 * mean), the reference's padding colour

_MEAN = np.asarray(MEAN_RGB, np.float32)
_STD = np.asarray(STD_RGB, np.float32)
# uint8 value -> normalised float32 per RGB channel
_NORMALISED_RGB = normalisation_tables(MEAN_RGB, STD_RGB)


@dataclass(frozen=True)
class CropInfo:
    """Where the image lies in the network input: rows [0, valid_hw[0]), cols [0, valid_hw[1]).

    valid_hw differs from the image size only when the reference path had to scale a frame
    larger than REFERENCE_HW down.
    """

    input_hw: tuple[int, int]
    valid_hw: tuple[int, int]


def build_module(arch: str | Path = "S") -> HyCTAS:
    """A randomly initialised network in eval mode from "S", "M", "L" or an architecture JSON."""
    if isinstance(arch, str) and arch in ARCHITECTURES:
        path = ARCH_DIR / ARCHITECTURES[arch]
    else:
        path = Path(arch)
        if not path.is_file():
            raise ValueError(f"unknown architecture {arch!r}: use one of {sorted(ARCHITECTURES)} "
                             "or the path of an architecture JSON file")
    return HyCTAS(load_architecture(path)).eval()


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Strict load of the released layout (``{'state_dict': ...}``) or a bare state dict;
    WeightsError (a ValueError) naming what does not fit (see core.weights.load_checkpoint)."""
    return _load_checkpoint(model, path, "HyCTAS")


def preprocess(bgr: np.ndarray, mode: Literal["reference", "native"] = "reference",
               pad_multiple: int = STRIDE) -> tuple[np.ndarray, CropInfo]:
    """uint8 BGR [H,W,3] -> normalised float32 RGB [1,3,Hp,Wp] and where the image lies in it.

    The image sits at the top left; the rest is the mean colour (123,116,103) before
    normalisation, as in the reference. Normalisation is (x/255 - mean)/std in float32.
    "native" pads the sides up to multiples of pad_multiple (a multiple of STRIDE).
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 BGR image [H,W,3], got {bgr.dtype} {bgr.shape}")
    if pad_multiple <= 0 or pad_multiple % STRIDE:
        raise ValueError(f"pad_multiple must be a positive multiple of {STRIDE}, "
                         f"not {pad_multiple}")
    height, width = bgr.shape[:2]
    if mode == "reference":
        input_hw = REFERENCE_HW
        scale = min(1.0, REFERENCE_HW[0] / height, REFERENCE_HW[1] / width)
        if scale < 1.0:
            size_wh = (min(REFERENCE_HW[1], round(width * scale)),
                       min(REFERENCE_HW[0], round(height * scale)))
            bgr = cv2.resize(bgr, size_wh, interpolation=cv2.INTER_AREA)
    elif mode == "native":
        input_hw = tuple(-(-side // pad_multiple) * pad_multiple for side in (height, width))
    else:
        raise ValueError(f"mode must be 'reference' or 'native', not {mode!r}")
    valid_h, valid_w = bgr.shape[:2]
    pad_value = (np.asarray(PAD_RGB, np.float32) / np.float32(255) - _MEAN) / _STD
    tensor = np.empty((1, 3, *input_hw), np.float32)
    tensor[0] = pad_value[:, None, None]
    normalise_into(bgr, _NORMALISED_RGB, tensor[0, :, :valid_h, :valid_w], swap_rb=True)
    return tensor, CropInfo(input_hw=tuple(input_hw), valid_hw=(valid_h, valid_w))


def _upsample_valid_region(logits: torch.Tensor, crop: CropInfo) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of the logits to the input size, restricted to
    the valid region: the same values as upsampling everything and cropping, at less cost."""
    (h, w), (input_h, input_w), (valid_h, valid_w) = logits.shape[-2:], crop.input_hw, crop.valid_hw
    factor_h, factor_w = input_h // h, input_w // w
    if (factor_h * h, factor_w * w) != (input_h, input_w):
        full = F.interpolate(logits, size=(input_h, input_w), mode="bilinear", align_corners=False)
        return full[..., :valid_h, :valid_w]
    # With an integer factor, upsampling a top-left crop of the logits by the same factor keeps
    # the sampling positions and weights; output row y reads source rows floor((y+0.5)/f-0.5)+{0,1}.
    rows = min(h, max(0, math.floor((valid_h - 0.5) / factor_h - 0.5)) + 2)
    cols = min(w, max(0, math.floor((valid_w - 0.5) / factor_w - 0.5)) + 2)
    region = F.interpolate(logits[..., :rows, :cols], size=(rows * factor_h, cols * factor_w),
                           mode="bilinear", align_corners=False)
    return region[..., :valid_h, :valid_w]


# Logit rows per band of _upsampled_argmax: 8 rows upsample to 32 x 1280 x 19 floats
# (3 MB), about what a core's cache holds, instead of the whole 70 MB at once.
BAND_ROWS = 8


def _upsampled_argmax(logits: torch.Tensor, crop: CropInfo,
                      confidence: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [valid_h, valid_w] first-index argmax over the classes of the upsampled valid
    region (_upsample_valid_region), by OpenCV (``first_argmax``: torch's argmax over the
    class dimension was most of the time, docs/benchmarks.md), in bands of output rows. With a power-of-two row
    factor a band upsampled alone, with one logit row of margin on each side, samples the
    same positions with the same weights (every coordinate is exact in binary): the same
    values as upsampling everything, without the whole upsampled tensor in memory. With
    ``confidence`` also the uint8 softmax probability (0-255) of that class over the same
    upsampled logits (None without)."""
    (h, w), (input_h, input_w), (valid_h, valid_w) = logits.shape[-2:], crop.input_hw, crop.valid_hw
    factor_h, factor_w = input_h // h, input_w // w
    if (factor_h * h, factor_w * w) != (input_h, input_w) or factor_h & (factor_h - 1):
        scores = _upsample_valid_region(logits, crop)[0]
        return first_argmax(scores.numpy()), max_softmax(scores.numpy()) if confidence else None
    rows = min(h, max(0, math.floor((valid_h - 0.5) / factor_h - 0.5)) + 2)
    cols = min(w, max(0, math.floor((valid_w - 0.5) / factor_w - 0.5)) + 2)
    train_ids = np.empty((valid_h, valid_w), np.uint8)
    scored = np.empty((valid_h, valid_w), np.uint8) if confidence else None
    for top in range(0, -(-valid_h // factor_h), BAND_ROWS):
        first, last = max(top - 1, 0), min(top + BAND_ROWS + 1, rows)
        band = F.interpolate(logits[..., first:last, :cols],
                             size=((last - first) * factor_h, cols * factor_w),
                             mode="bilinear", align_corners=False)
        start, stop = top * factor_h, min((top + BAND_ROWS) * factor_h, valid_h)
        skip = (top - first) * factor_h
        scores = band[0, :, skip:skip + stop - start, :valid_w]
        train_ids[start:stop] = first_argmax(scores.numpy())
        if confidence:
            scored[start:stop] = max_softmax(scores.numpy())
    return train_ids, scored


def postprocess(logits: torch.Tensor | np.ndarray, crop: CropInfo,
                image_hw: tuple[int, int]) -> np.ndarray:
    """Stride-4 logits [1,19,h,w] -> uint8 train ids [H,W] of the image region.

    As the reference evaluates: bilinear upsampling to the network input size, argmax over the
    classes (of the logits: the reference's softmax first changes no pixel on the golden cases),
    crop to the image. A frame the reference path scaled down is scaled back (nearest).
    """
    return labels_and_confidence(logits, crop, image_hw, confidence=False)[0]


def labels_and_confidence(logits: torch.Tensor | np.ndarray, crop: CropInfo,
                          image_hw: tuple[int, int],
                          confidence: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``postprocess``'s train ids and, with ``confidence``, the uint8 [H,W] softmax
    probability (0-255) of each pixel's class (None without)."""
    logits = torch.as_tensor(logits)
    if logits.ndim != 4 or logits.shape[:2] != (1, NUM_CLASSES):
        raise ValueError(f"expected logits [1,{NUM_CLASSES},h,w], got {tuple(logits.shape)}")
    with torch.inference_mode():
        train_ids, scores = _upsampled_argmax(logits.float().cpu(), crop, confidence)
    image_hw = tuple(int(v) for v in image_hw)
    if train_ids.shape != image_hw:
        train_ids = cv2.resize(train_ids, image_hw[::-1], interpolation=cv2.INTER_NEAREST)
        if scores is not None:
            scores = cv2.resize(scores, image_hw[::-1], interpolation=cv2.INTER_NEAREST)
    return train_ids, scores
