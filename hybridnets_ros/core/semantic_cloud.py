"""The class image, its confidence and a pixel-aligned ground point per pixel, at an output
scale: what Nav2's semantic segmentation layer reads (docs/nav2.md).

An output of w x h pixels samples the image's W x H maps: output pixel (u, v) has its centre
at image coordinate ((u + 0.5) W / w - 0.5, (v + 0.5) H / h - 0.5) (pixel centres at whole
numbers, as OpenCV's), and takes the class and confidence of the image pixel nearest to it.
Its 3D point lies on the ray through that centre (the lens's distortion undone): where the
ray meets the ground plane z = 0 of the ground frame, or, with metric depth (REP-118: along
the optical axis), at the sampled pixel's depth along the ray. NaN where the ray never meets
the ground, where the point lies farther than ``max_range`` from the camera (horizontally),
or where the depth is invalid or belongs to a class without a surface (sky).

The rays and ground points depend only on the camera and the output size: built once, a
frame then costs a gather (and, with depth, a multiply-add per output pixel).
"""
from __future__ import annotations

import numpy as np

from .camera import CameraModel


def output_hw(image_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """(h, w) of the outputs of an image of ``image_hw`` at ``scale`` (at least 1 x 1)."""
    return tuple(max(1, int(round(side * scale))) for side in image_hw)


def sample_centres(source: int, size: int) -> np.ndarray:
    """Image coordinates of the centres of ``size`` output pixels spread over ``source``."""
    return (np.arange(size) + 0.5) * (source / size) - 0.5


class Sampler:
    """The nearest image pixel of every output pixel: ``sample`` of a [H, W] map gives its
    [h, w] output (the map itself at scale 1)."""

    def __init__(self, image_hw: tuple[int, int], scale: float):
        self.image_hw = tuple(image_hw)
        self.scale = scale
        self.out_hw = output_hw(self.image_hw, scale)
        self.identity = self.out_hw == self.image_hw
        rows, cols = (np.clip(np.floor(sample_centres(n, m) + 0.5), 0, n - 1).astype(np.intp)
                      for n, m in zip(self.image_hw, self.out_hw))
        self._index = np.ix_(rows, cols)

    def sample(self, image_map: np.ndarray) -> np.ndarray:
        if image_map.shape[:2] != self.image_hw:
            raise ValueError(f"map {image_map.shape[1]}x{image_map.shape[0]} does not match the "
                             f"image's {self.image_hw[1]}x{self.image_hw[0]}")
        return image_map if self.identity else image_map[self._index]


class GroundPoints:
    """Pixel-aligned points [h, w, 3] float32 of one camera at one output size (module doc)."""

    def __init__(self, camera: CameraModel, scale: float, max_range: float):
        self.camera = camera
        self.sampler = Sampler((camera.height, camera.width), scale)
        self.max_range = float(max_range)
        h, w = self.sampler.out_hw
        u, v = np.meshgrid(sample_centres(camera.width, w), sample_centres(camera.height, h))
        rays = camera.pixel_rays(np.stack([u, v], -1))                      # [h, w, 3]
        self._origin = camera.t_ground_optical.astype(np.float32)
        self._rays = rays.astype(np.float32)
        # the farthest depth within max_range: a point's horizontal distance from the camera
        # is its depth times its ray's horizontal length
        with np.errstate(divide="ignore", invalid="ignore"):
            self._max_depth = (self.max_range / np.hypot(rays[..., 0], rays[..., 1])).astype(
                np.float32)
        plane = camera.intersect_ground(rays)
        offset = plane[..., :2] - camera.t_ground_optical[:2]
        with np.errstate(invalid="ignore"):  # NaN (no ground) stays NaN
            plane[~(np.hypot(offset[..., 0], offset[..., 1]) <= self.max_range)] = np.nan
        self._plane = plane.astype(np.float32)
        self._points = np.empty_like(self._rays)

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.sampler.out_hw

    def on_ground(self) -> np.ndarray:
        """The ground-plane points (the lookup itself: read only)."""
        return self._plane

    def at_depth(self, depth_m: np.ndarray, class_map: np.ndarray,
                 skip: np.ndarray) -> np.ndarray:
        """Points at the sampled pixels' metric depth [H, W] (REP-118), NaN where the depth
        is not finite and positive or the class is set in the bool lookup ``skip`` [256]
        (no surface); a buffer the next call overwrites."""
        depth = self.sampler.sample(depth_m)
        # Invalid pixels get a NaN depth, so that one multiply-add gives their NaN points
        # (NaN and non-positive depths fail the comparison).
        with np.errstate(invalid="ignore"):
            valid = ((depth > 0) & (depth <= self._max_depth)
                     & ~skip[self.sampler.sample(class_map)])
        depth = np.where(valid, depth, np.float32(np.nan))
        out = self._points
        np.multiply(self._rays, depth[..., None], out=out)
        out += self._origin
        return out
