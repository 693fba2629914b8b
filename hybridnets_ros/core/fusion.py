"""Several cameras' bird's-eye grids merged into one surround grid around the vehicle.

Every camera projects its latest class map onto the same surround :class:`GridSpec` (its
own :class:`BevProjector` built on that grid: cells it does not see are -1). A cell then
takes its value from the camera whose result is **newest** among those that see it; between
results with the same stamp the camera whose centre is **nearer** to the cell (on the
ground plane) wins, since its pixels cover the cell more finely. Cells no camera sees stay
-1. The fused grid's stamp is the oldest stamp among the cameras that own at least one cell.

Vectorised: one pass of whole-grid operations per camera (oldest first, newer ones paint
over), into buffers allocated once per grid.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .bev import UNSEEN, BevProjector, GridSpec


@dataclass
class CameraView:
    """One camera's latest result on the surround grid."""

    drivable: np.ndarray   # int8 [H, W], -1 unseen
    lane: np.ndarray       # int8 [H, W], -1 unseen
    distance: np.ndarray   # float32 [H, W]: ground distance from the camera centre to each cell
    stamp_ns: int          # stamp of the input image


def ground_distance(projector: BevProjector) -> np.ndarray:
    """float32 [H, W] distance on the ground plane from the projector's camera centre to
    each cell centre (the tie-break of the fusion rule); computed once per projector."""
    centres = projector.grid.cell_centres()[..., :2]
    return np.linalg.norm(centres - projector.camera.t_ground_optical[:2], axis=-1).astype(np.float32)


class SurroundFusion:
    """Merges :class:`CameraView` s into one drivable and one lane grid (module doc)."""

    def __init__(self, grid: GridSpec):
        self.grid = grid
        shape = (grid.height, grid.width)
        self.drivable = np.empty(shape, np.int8)
        self.lane = np.empty(shape, np.int8)
        self.owner = np.empty(shape, np.int16)        # index of the view a cell came from
        self._owner_stamp = np.empty(shape, np.int64)
        self._owner_distance = np.empty(shape, np.float32)
        self._take = np.empty(shape, bool)
        self._newer = np.empty(shape, bool)

    def fuse(self, views: Sequence[CameraView]) -> int | None:
        """Fills ``drivable`` and ``lane`` (reused by the next call) and returns the oldest
        stamp that contributed a cell, or None when no camera sees any cell."""
        self.drivable.fill(UNSEEN)
        self.lane.fill(UNSEEN)
        self.owner.fill(-1)
        self._owner_stamp.fill(np.iinfo(np.int64).min)
        self._owner_distance.fill(np.inf)
        take, newer = self._take, self._newer
        # Oldest first: a newer result overwrites every cell it sees; an equally new one
        # only the cells it is nearer to.
        for index in sorted(range(len(views)), key=lambda i: views[i].stamp_ns):
            view = views[index]
            np.less(view.distance, self._owner_distance, out=take)
            np.greater(view.stamp_ns, self._owner_stamp, out=newer)
            np.logical_or(take, newer, out=take)
            np.logical_and(take, np.not_equal(view.drivable, UNSEEN, out=newer), out=take)
            np.copyto(self.drivable, view.drivable, where=take)
            np.copyto(self.lane, view.lane, where=take)
            np.copyto(self.owner, index, where=take)
            np.copyto(self._owner_stamp, view.stamp_ns, where=take)
            np.copyto(self._owner_distance, view.distance, where=take)
        cells = np.bincount(self.owner.ravel() + 1, minlength=len(views) + 1)[1:]
        stamps = [view.stamp_ns for view, n in zip(views, cells) if n]
        return min(stamps) if stamps else None
