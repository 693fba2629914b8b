"""Hydra (Nekrasov et al., ICRA 2019): joint 6-class KITTI segmentation and metric depth.

The network (``network.HydraNet``) and the original notebook's pre- and post-processing
(DrSleep/multi-task-refinenet ``ExpKITTI_joint.ipynb``), reproduced exactly:

    model = load_checkpoint(build_module(), "ExpKITTI_joint.ckpt")
    x = preprocess(bgr)                                   # float32 [1, 3, H, W], no resize
    with torch.inference_mode():
        segm_logits, depth = model(torch.from_numpy(x))   # [1, 6, h, w], [1, 1, h, w]
    seg_mask, depth_m = postprocess(segm_logits, depth, bgr.shape[:2])

``seg_mask`` holds indices into ``CLASS_NAMES``; ``depth_m`` is in metres.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ...postprocess import first_argmax, max_softmax
from ...preprocess import normalise_into
from ...weights import load_checkpoint as _load_checkpoint
from .network import NUM_CLASSES, HydraNet

__all__ = ["CLASS_NAMES", "CLASS_COLORS_RGB", "RELEASED_WEIGHTS_NAME", "MEAN_RGB", "STD_RGB",
           "OUTPUT_NAMES", "HydraNet", "build_module", "load_checkpoint", "network_output_hw",
           "preprocess", "postprocess"]

CLASS_NAMES: tuple[str, ...] = ("sky", "building", "road", "sidewalk", "vegetation", "car")
# The original's src/cmap_kitti.npy (the CamVid colours of these classes).
CLASS_COLORS_RGB: tuple[tuple[int, int, int], ...] = (
    (128, 128, 128), (128, 0, 0), (128, 64, 128), (0, 0, 192), (128, 128, 0), (64, 0, 128))
RELEASED_WEIGHTS_NAME = "ExpKITTI_joint.ckpt"
MEAN_RGB = (0.485, 0.456, 0.406)
STD_RGB = (0.229, 0.224, 0.225)
OUTPUT_NAMES = ("segmentation", "depth")  # the order HydraNet.forward returns them in


# uint8 value -> normalised float32 for each RGB channel, computed with the notebook's
# float64 arithmetic ((v * (1/255) - mean) / std, cast last). Elementwise, so a lookup
# gives bit-identical results at a fraction of the cost of float64 arithmetic per pixel.
_NORMALISED_RGB = ((np.arange(256)[None, :] * (1. / 255) - np.array(MEAN_RGB)[:, None])
                   / np.array(STD_RGB)[:, None]).astype(np.float32)  # [3, 256]


def build_module() -> HydraNet:
    """The 6-class network with random weights, in eval mode."""
    return HydraNet(NUM_CLASSES).eval()


def load_checkpoint(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Strict load of the released layout (``{'state_dict': ...}``) or a bare state dict;
    WeightsError (a ValueError) naming what does not fit (see core.weights.load_checkpoint)."""
    return _load_checkpoint(model, path, "Hydra")


def network_output_hw(image_hw: tuple[int, int]) -> tuple[int, int]:
    """Size (h, w) of both outputs for an H x W input: two ceil-halvings (output stride 4),
    i.e. ceil(side / 4)."""
    return tuple((side + 3) // 4 for side in image_hw)


def preprocess(bgr: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """uint8 BGR [H, W, 3] -> float32 [1, 3, H, W] RGB, ``(v / 255 - mean) / std``, no resize
    (into ``out`` when it has that shape).

    Bit-identical to the original's float64 normalisation followed by a float32 cast.
    """
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected a uint8 [H, W, 3] BGR image, got {bgr.dtype} {bgr.shape}")
    if out is None or out.shape != (1, 3, *bgr.shape[:2]):
        out = np.empty((1, 3, *bgr.shape[:2]), np.float32)
    normalise_into(bgr, _NORMALISED_RGB, out[0], swap_rb=True)
    return out


def postprocess(seg_logits: np.ndarray | torch.Tensor, depth: np.ndarray | torch.Tensor,
                image_hw: tuple[int, int], confidence: bool = False) -> tuple[np.ndarray, ...]:
    """Network outputs of one image -> (``seg_mask`` uint8 [H, W], ``depth_m`` float32 [H, W]).

    As the original: bicubic resize (OpenCV ``INTER_CUBIC``) of all logits to the image
    size, then argmax (the first class wins a tie); bicubic resize of the depth, then abs.
    ``seg_logits`` is [1, C, h, w] or [C, h, w]; ``depth`` is [1, 1, h, w], [1, h, w] or [h, w].
    With ``confidence`` a third array: uint8 [H, W] softmax probability (0-255) of each
    pixel's class over the resized logits (the segmentation head is a softmax classifier).
    """
    logits, depth_map = _as_float32(seg_logits), _as_float32(depth)
    if logits.ndim == 4 and logits.shape[0] == 1:
        logits = logits[0]
    if (logits.ndim != 3 or depth_map.size != logits[0].size
            or depth_map.shape[-2:] != logits.shape[1:]):
        raise ValueError(f"expected logits [1, C, h, w] and depth [1, 1, h, w] of one image, "
                         f"got {tuple(np.shape(seg_logits))} and {tuple(np.shape(depth))}")
    height, width = map(int, image_hw)
    # One plane at a time, straight into the planes OpenCV's first-index argmax takes:
    # the same bicubic weights as resizing the [h, w, C] scores at once, without two
    # transposes of C values per pixel (21 -> 12 ms of CPU at 1280x720, 6 classes). The
    # single-channel kernels sum in another order: scores move by ~1e-6, a near-tie pixel
    # in a million may flip (test_hydra_golden bounds it).
    planes = np.empty((len(logits), height, width), np.float32)
    for plane, scores in zip(planes, logits):
        cv2.resize(scores, (width, height), dst=plane, interpolation=cv2.INTER_CUBIC)
    seg_mask = first_argmax(planes)
    depth_m = np.abs(cv2.resize(depth_map.reshape(logits.shape[1:]), (width, height),
                                interpolation=cv2.INTER_CUBIC))
    return (seg_mask, depth_m, max_softmax(planes)) if confidence else (seg_mask, depth_m)


def _as_float32(array: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().numpy()
    return np.asarray(array, dtype=np.float32)
