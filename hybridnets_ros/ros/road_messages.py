"""ROS messages of the road geometry (core.road_geometry): hybridnets_msgs RoadGeometry and
LaneBoundaryArray, the RViz view of the lanes, and the drivable area's free distance per
bearing as a LaserScan. All in the ground frame (the header given)."""
from __future__ import annotations

import numpy as np
from geometry_msgs.msg import Point
from hybridnets_msgs.msg import LaneBoundary, LaneBoundaryArray, RoadGeometry
from sensor_msgs.msg import LaserScan
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from ..core.road_geometry import DrivableEdges, LaneLine
from ..core.road_geometry import RoadGeometry as Geometry

EGO_COLOUR = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
LANE_COLOUR = ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.9)
EDGE_COLOUR = ColorRGBA(r=1.0, g=0.55, b=0.0, a=0.9)


def points(xy: np.ndarray) -> list[Point]:
    """(N, 2) ground-plane points as geometry_msgs Points at z = 0."""
    return [Point(x=x, y=y, z=0.0) for x, y in np.asarray(xy, np.float64).tolist()]


def lane_boundary(line: LaneLine) -> LaneBoundary:
    return LaneBoundary(id=int(line.id), points=points(line.points),
                        confidence=float(line.confidence), side=int(line.side),
                        range_start=float(line.range_m[0]), range_end=float(line.range_m[1]),
                        residual=float(line.residual_m), dashed=bool(line.dashed))


def lane_array(header: Header, geometry: Geometry) -> LaneBoundaryArray:
    return LaneBoundaryArray(header=header, lanes=[lane_boundary(l) for l in geometry.lanes])


def road_geometry(header: Header, geometry: Geometry) -> RoadGeometry:
    ego, edges = geometry.ego, geometry.edges
    return RoadGeometry(
        header=header, lanes=[lane_boundary(l) for l in geometry.lanes],
        ego_valid=bool(ego.valid), ego_left_id=int(ego.left_id), ego_right_id=int(ego.right_id),
        ego_width=float(ego.width_m), ego_center_offset=float(ego.center_offset_m),
        ego_heading=float(ego.heading_rad), ego_curvature=float(ego.curvature_1pm),
        drivable_left=points(edges.left) if edges is not None else [],
        drivable_right=points(edges.right) if edges is not None else [])


def drivable_scan(header: Header, edges: DrivableEdges | None) -> LaserScan:
    """Free distance per bearing (REP-117: +inf where the drivable area reaches range_max),
    as Nav2's obstacle layer and planners take a laser scan. No edges: an empty scan."""
    if edges is None:
        return LaserScan(header=header)
    ranges = np.asarray(edges.ranges, np.float32)
    return LaserScan(header=header, angle_min=float(edges.angle_min),
                     angle_max=float(edges.angle_min + edges.angle_increment
                                     * max(len(ranges) - 1, 0)),
                     angle_increment=float(edges.angle_increment), range_min=0.0,
                     range_max=float(edges.range_max), ranges=ranges.tolist())


def lane_markers(header: Header, geometry: Geometry) -> MarkerArray:
    """Line strips: each lane boundary (the ego lane's in green) and the drivable edges. The
    topic's first marker clears the previous frame's, so lines no longer seen disappear."""
    markers = [Marker(header=header, action=Marker.DELETEALL)]
    ego = geometry.ego
    ego_ids = {ego.left_id, ego.right_id} if ego.valid else set()
    for line in geometry.lanes:
        mine = line.id in ego_ids
        markers.append(_strip(header, "lanes", int(line.id), line.points,
                              EGO_COLOUR if mine else LANE_COLOUR, 0.2 if mine else 0.12))
    if geometry.edges is not None:
        for index, edge in enumerate((geometry.edges.left, geometry.edges.right)):
            markers.append(_strip(header, "drivable_edges", index, edge, EDGE_COLOUR, 0.1))
    return MarkerArray(markers=[m for m in markers if m is not None])


def _strip(header: Header, ns: str, id_: int, xy: np.ndarray, colour: ColorRGBA,
           width: float) -> Marker | None:
    if len(xy) < 2:
        return None
    marker = Marker(header=header, ns=ns, id=id_, type=Marker.LINE_STRIP, action=Marker.ADD,
                    points=points(xy), color=colour)
    marker.scale.x = width
    marker.pose.orientation.w = 1.0
    return marker
