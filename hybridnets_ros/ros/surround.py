"""The fused surround grids of several cameras: a stage beside the frame processors.

Each camera's latest result is projected onto the surround grid by its own processor's
camera model (once per result) and merged by core.fusion's rule; the stage builds the
``fused/...`` messages. The node only holds one, feeds it the cameras' latest results and
publishes what it returns on a timer. Networks with a lane grid (a ``lane`` product) have
fused grids.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import rclpy.time
from nav_msgs.msg import OccupancyGrid
from std_msgs.msg import Header

from ..core.adapter import LANE, ModelAdapter, Result
from ..core.bev import BevProjector, GridSpec
from ..core.fusion import CameraView, SurroundFusion, ground_distance
from . import messages
from .frame import FrameProcessor, GridUnavailable
from .messages import stamp_ns
from .outputs import LATCHED_QOS

# The fused outputs: name -> topic (relative to the node's namespace); latched like grids.
FUSED_TOPICS = {"drivable": "fused/drivable/grid", "lane": "fused/lane/grid"}
FUSED_TYPE, FUSED_QOS = OccupancyGrid, LATCHED_QOS


def has_fused_grids(adapter: ModelAdapter) -> bool:
    return LANE in adapter.products


@dataclass
class CameraProjection:
    """One camera's projection onto the surround grid, kept while its projector is."""

    projector: BevProjector
    distance: np.ndarray            # ground distance from the camera to each cell
    result: Result | None = None    # the result projected last (into the projector's buffers)


@dataclass
class SurroundStage:
    fusion: SurroundFusion | None = None
    projections: dict[int, CameraProjection] = field(default_factory=dict)  # by camera index

    def reset(self) -> None:
        self.projections.clear()

    def messages(self, latest: list[tuple[FrameProcessor, Header, Result] | None],
                 grid: GridSpec, ground_frame: str, now,
                 names: list[str]) -> tuple[dict[str, OccupancyGrid], str | None]:
        """The fused grids from every camera's latest (processor, header, result), by
        name (FUSED_TOPICS), and why they are all unknown (None: some camera sees a cell).
        All unknown, stamped ``now`` (a Time message), they replace a latched grid that is
        no longer current.
        ``names``: the cameras' names, for the reason."""
        if self.fusion is None or self.fusion.grid != grid:
            self.fusion = SurroundFusion(grid)
        views, unseen = [], []
        for index, entry in enumerate(latest):
            if entry is None:
                unseen.append(f"{names[index]}: no result yet")
            elif isinstance(view := self._view(index, *entry, grid), str):
                unseen.append(f"{names[index]}: {view}")
            else:
                views.append(view)
        stamp = self.fusion.fuse(views)
        if stamp is None:
            reason = "no camera sees a cell of the fused grid" + (
                f" ({'; '.join(unseen)})" if unseen else "")
            header = Header(stamp=now, frame_id=ground_frame)
        else:
            reason = None
            header = Header(stamp=rclpy.time.Time(nanoseconds=stamp).to_msg(),
                            frame_id=ground_frame)
        return {"drivable": messages.occupancy_grid(header, self.fusion.drivable, grid),
                "lane": messages.occupancy_grid(header, self.fusion.lane, grid)}, reason

    def _view(self, index: int, processor: FrameProcessor, header: Header, result: Result,
              grid: GridSpec) -> CameraView | str:
        """The camera's latest result on the surround grid (projected once per result), or
        why it has none (its own grids say so too: diagnostics, log)."""
        try:
            projector = processor.fused_projector(header, result.seg_mask.shape, grid)
        except GridUnavailable as exc:
            return str(exc)
        projection = self.projections.get(index)
        if projection is None or projection.projector is not projector:
            projection = self.projections[index] = CameraProjection(projector,
                                                                    ground_distance(projector))
        if projection.result is not result:
            processor.surfaces.grids(result, projector)  # into the projector's buffers
            projection.result = result
        return CameraView(projector.drivable, projector.lane, projection.distance,
                          stamp_ns(header))
