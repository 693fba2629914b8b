"""How a network's Result becomes the drivable mask and the bird's-eye grids.

Two rules; a model adapter picks one (``ModelAdapter.surfaces``):

- :class:`MaskSurfaces`: the network gives a drivable-area and a lane-line mask
  (``Result.drivable_mask``, ``Result.lane_mask``, possibly overlapping): both project onto
  the ground plane (core.bev), giving a drivable and a lane grid.
- :class:`ClassSurfaces`: the network gives a class per pixel (and maybe depth): the
  ``drivable_classes`` / ``obstacle_classes`` settings (or the adapter's defaults) say
  which classes are free and which occupied; with depth the grid comes from the 3D points
  (core.depth_grid), else from the classes on the ground plane. No lane grid.

Each is built from the configuration and rebuilt when it changes: the class settings have
this one owner.
"""
from __future__ import annotations

import cv2
import numpy as np

from .bev import BevProjector, class_values
from .depth_grid import DepthProjector, class_lookup


class MaskSurfaces:
    def drivable_mask(self, result) -> np.ndarray:
        return result.drivable_mask

    def grids(self, result, projector: BevProjector,
              depth_projector: DepthProjector | None = None):
        """(drivable, lane) grids; buffers of ``projector``, reused by its next call."""
        return projector.project_masks(result.drivable_mask, result.lane_mask)


class ClassSurfaces:
    def __init__(self, adapter, config):
        drivable = adapter.class_ids(config.drivable_classes or adapter.drivable_classes)
        obstacle = adapter.class_ids(config.obstacle_classes or adapter.obstacle_classes)
        self.drivable = class_lookup(drivable)
        self._drivable_bytes = self.drivable.view(np.uint8)
        self.obstacle = class_lookup(obstacle)
        self.no_surface = class_lookup(adapter.class_ids(adapter.no_surface_classes))
        self.values = class_values(drivable, obstacle)
        self.obstacle_height = config.obstacle_height

    def drivable_mask(self, result) -> np.ndarray:
        # cv2.LUT of the 0/1 bytes: numpy's indexing first widens the class ids to intp
        return cv2.LUT(result.seg_mask, self._drivable_bytes).view(bool)

    def grids(self, result, projector: BevProjector,
              depth_projector: DepthProjector | None = None):
        """(drivable, None): from depth where the network has it, else from the classes."""
        if depth_projector is not None and result.depth_m is not None:
            return depth_projector.occupancy(result.depth_m, result.seg_mask, self.drivable,
                                             self.obstacle, self.no_surface,
                                             self.obstacle_height), None
        return projector.project_classes(result.seg_mask, self.values), None
