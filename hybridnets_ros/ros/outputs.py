"""The one table of outputs: topic, message type, QoS and how each is built from a frame.

The node creates its publishers from it and builds only what has subscribers; replay
records from it (with each row's QoS as the offered profile, so `ros2 bag play`
republishes like the node); the demo recorder, bench and the tests list it. Adding an
output is one row here and one builder. Rows with ``per_frame=False`` describe the model
(VisionInfo, LabelInfo): built once from a :class:`ModelProducts` and latched. Each row says what it
``requires`` of the network (its adapter's products: detections, semantic, depth, lane);
only the rows the configured network supports exist.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from hybridnets_msgs.msg import LaneBoundaryArray, RoadGeometry
from nav_msgs.msg import OccupancyGrid
from rclpy.qos import QoSDurabilityPolicy, QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, LaserScan, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo, VisionClass, VisionInfo
from visualization_msgs.msg import MarkerArray

from ..core.adapter import DEPTH, DETECTIONS, LANE, SEMANTIC, ModelAdapter, Surfaces
from ..core.bev import OCCUPIED, BevProjector, drivable_boundary
from ..core.camera import CameraModel
from ..core.depth_grid import DepthProjector
from ..core.objects3d import BoxEstimates, GroundContacts
from ..core import registry
from ..core.road_geometry import RoadGeometry as Geometry
from ..core.semantic_cloud import GroundPoints, Sampler
from ..core.visualize import draw_result
from ..pipeline.pipeline import Result
from . import messages, road_messages

# Reliable, so both reliable (RViz, recorders) and best-effort subscribers connect.
OUTPUT_QOS = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                        history=QoSHistoryPolicy.KEEP_LAST, depth=2,
                        durability=QoSDurabilityPolicy.VOLATILE)
# Map-like outputs: transient-local so that Nav2's static layer (which subscribes
# transient-local by default) and late joiners get the newest one; volatile subscribers
# still connect. Keep last 1: only the newest grid matters.
LATCHED_QOS = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                         history=QoSHistoryPolicy.KEEP_LAST, depth=1,
                         durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


@dataclass
class FrameProducts:
    """What one processed frame offers the builders."""

    header: Header                      # the input image's header
    bgr: np.ndarray
    result: Result
    adapter: ModelAdapter               # classes, palette, overlay style
    surfaces: Surfaces                  # the drivable mask and grids (core.surfaces)
    ground_frame: str
    points_z: float = 0.0                              # height of the point-cloud points
    projector: BevProjector | None = None              # None: no grids this frame
    grids: tuple[np.ndarray, np.ndarray | None] | None = None  # (drivable, lane) of this frame
    depth_projector: DepthProjector | None = None      # networks with depth, with a projector
    points_decimation: int = 1
    camera: CameraModel | None = None                  # None: no CameraInfo or pose this frame
    contacts: GroundContacts | None = None             # detections' ground points (with camera)
    track_ids: np.ndarray | None = None                # [N] per detection; None: tracking off
    velocities: np.ndarray | None = None               # [N,2] m/s in ground_frame, NaN: unknown
    boxes_3d: BoxEstimates | None = None               # with camera, when a 3D output is wanted
    sampler: Sampler | None = None                     # semantic_output_scale (None: scale 1)
    ground_points: GroundPoints | None = None          # segmentation/points' lookup, when wanted
    road: Geometry | None = None                       # with camera, when a road output is wanted
    # (namespace, id) of the markers viewers hold, owned by the frame processor; the markers
    # builder replaces them with what it draws, so that the next frame deletes what is gone.
    shown_markers: set[tuple[str, int]] = field(default_factory=set)

    @property
    def ground_header(self) -> Header:
        return Header(stamp=self.header.stamp, frame_id=self.ground_frame)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.adapter.detection_classes


@dataclass
class ModelProducts:
    """What the model-description rows (``per_frame=False``) are built from."""

    header: Header                      # stamp of the configuration, no frame
    method: str                         # the network and its training set
    class_names: tuple[str, ...]        # detection classes (Detection2D class_id values)
    seg_class_names: tuple[str, ...]    # segmentation/label values 0, 1, ...


@dataclass(frozen=True)
class Output:
    name: str
    topic: str                     # relative to the node's namespace
    msg_type: type
    build: Callable[[FrameProducts], object]
    needs_grids: bool = False      # built only when the frame has a bird's-eye projection
    needs_camera: bool = False     # built only when the frame has a camera model (3D)
    needs_road: bool = False       # built only when the frame has road geometry (with camera)
    enabled_by: str | None = None  # a boolean setting that must be true, e.g. publish_points
    viewer_only: bool = False      # a debug picture, not data a planner consumes
    qos: QoSProfile = field(default_factory=lambda: OUTPUT_QOS)
    per_frame: bool = True         # False: built once from ModelProducts, published latched
    requires: frozenset = frozenset()  # what the network must produce (its adapter's products)


def class_listing(p: ModelProducts) -> str:
    """The classes as a YAML flow mapping (VisionInfo.database_location): label value ->
    segmentation class, and the detection class ids."""
    labels = ", ".join(f"{i}: {name}" for i, name in enumerate(p.seg_class_names))
    return f"{{segmentation/label: {{{labels}}}, detections: [{', '.join(p.class_names)}]}}"


def _vision_info(p: ModelProducts) -> VisionInfo:
    return VisionInfo(header=p.header, method=p.method, database_location=class_listing(p),
                      database_version=1)


def _label_info(p: ModelProducts) -> LabelInfo:
    """segmentation/label's class map (vision_msgs 4.x). threshold 0: each pixel takes its
    highest-scoring class, no confidence threshold applies."""
    return LabelInfo(header=p.header, threshold=0.0, class_map=[
        VisionClass(class_id=i, class_name=name) for i, name in enumerate(p.seg_class_names)])


def _object_markers(p: FrameProducts) -> MarkerArray:
    msg, drawn = messages.object_markers(p.ground_header, p.track_ids, p.contacts, p.boxes_3d,
                                         p.velocities, p.shown_markers)
    p.shown_markers.clear()
    p.shown_markers.update(drawn)
    return msg


def _semantic_image(p: FrameProducts, image: np.ndarray) -> Image:
    """A per-pixel map at semantic_output_scale as mono8 (label, confidence)."""
    return messages.image(p.header, image if p.sampler is None else p.sampler.sample(image),
                          "mono8")


def _semantic_points(p: FrameProducts) -> PointCloud2:
    """segmentation/points: with metric depth the pixels' depth along their rays, else the
    rays' ground-plane points (core.semantic_cloud)."""
    if p.result.depth_m is None:
        points = p.ground_points.on_ground()
    else:
        points = p.ground_points.at_depth(p.result.depth_m, p.result.seg_mask,
                                          p.surfaces.no_surface)
    return messages.organized_cloud(p.ground_header, points)


def _overlay(p: FrameProducts) -> Image:
    ranges = None if p.contacts is None else p.contacts.ranges
    picture = draw_result(p.bgr, p.result, p.adapter, track_ids=p.track_ids, ranges=ranges)
    return messages.image(p.header, picture, "bgr8")


OUTPUTS: tuple[Output, ...] = (
    Output("detections", "detections", Detection2DArray,
           lambda p: messages.detection_array(p.header, p.result.detections, p.class_names,
                                              p.track_ids),
           requires=frozenset({DETECTIONS})),
    Output("detections_3d", "detections_3d", Detection3DArray,
           lambda p: messages.detection3d_array(p.ground_header, p.result.detections,
                                                p.class_names, p.track_ids, p.contacts,
                                                p.boxes_3d),
           needs_camera=True, requires=frozenset({DETECTIONS})),
    Output("detections_3d_markers", "detections_3d/markers", MarkerArray, _object_markers,
           needs_camera=True, viewer_only=True, requires=frozenset({DETECTIONS})),
    Output("drivable_mask", "drivable/mask", Image,
           lambda p: messages.mask_image(p.header, p.surfaces.drivable_mask(p.result)),
           requires=frozenset({SEMANTIC})),
    Output("lane_mask", "lane/mask", Image,
           lambda p: messages.mask_image(p.header, p.result.lane_mask),
           requires=frozenset({LANE})),
    # As Isaac ROS segmentation and Autoware publish: one label image (class ids) and its
    # colour rendering.
    Output("segmentation_label", "segmentation/label", Image,
           lambda p: _semantic_image(p, p.result.seg_mask), requires=frozenset({SEMANTIC})),
    # Nav2's semantic segmentation layer (docs/nav2.md): the label's class probability and
    # a 3D point per label pixel, both aligned with the label at semantic_output_scale.
    Output("segmentation_confidence", "segmentation/confidence", Image,
           lambda p: _semantic_image(p, p.result.confidence), requires=frozenset({SEMANTIC})),
    Output("segmentation_points", "segmentation/points", PointCloud2, _semantic_points,
           needs_grids=True, requires=frozenset({SEMANTIC})),
    Output("segmentation_color", "segmentation/color", Image,
           lambda p: messages.colour_image(p.header, p.result.seg_mask,
                                           p.adapter.seg_colors_rgb),
           viewer_only=True, requires=frozenset({SEMANTIC})),  # the label, to look at
    Output("vision_info", "vision_info", VisionInfo, _vision_info, qos=LATCHED_QOS,
           per_frame=False),
    # Beside the label image, latched, as vision_msgs' README asks of segmentation pipelines
    # (and Isaac ROS and Autoware read it).
    Output("label_info", "segmentation/label_info", LabelInfo, _label_info, qos=LATCHED_QOS,
           per_frame=False),
    # REP-118 depth, the input image's header.
    Output("depth", "depth", Image, lambda p: messages.depth_image(p.header, p.result.depth_m),
           requires=frozenset({DEPTH})),
    Output("drivable_grid", "drivable/grid", OccupancyGrid,
           lambda p: messages.occupancy_grid(p.ground_header, p.grids[0], p.projector.grid),
           needs_grids=True, qos=LATCHED_QOS, requires=frozenset({SEMANTIC})),
    Output("lane_grid", "lane/grid", OccupancyGrid,
           lambda p: messages.occupancy_grid(p.ground_header, p.grids[1], p.projector.grid),
           needs_grids=True, qos=LATCHED_QOS, requires=frozenset({LANE})),
    Output("drivable_points", "drivable/points", PointCloud2,
           lambda p: messages.point_cloud(p.ground_header, p.projector.cell_points(
               drivable_boundary(p.grids[0]), p.points_z)),
           needs_grids=True, enabled_by="publish_points", requires=frozenset({SEMANTIC})),
    Output("lane_points", "lane/points", PointCloud2,
           lambda p: messages.point_cloud(p.ground_header, p.projector.cell_points(
               p.grids[1] == OCCUPIED, p.points_z)),
           needs_grids=True, enabled_by="publish_points", requires=frozenset({LANE})),
    # The depth as 3D points with their class, in ground_frame (needs the camera model).
    Output("points", "points", PointCloud2,
           lambda p: messages.labelled_cloud(p.ground_header, p.depth_projector.cloud(
               p.result.depth_m, p.result.seg_mask, p.surfaces.no_surface, p.points_decimation)),
           needs_grids=True, requires=frozenset({DEPTH})),
    # Road geometry (core.road_geometry, docs/road_geometry.md) in ground_frame: lane
    # boundaries where the network has a lane output, the drivable area's edges for all.
    # `lanes` is RoadGeometry's lanes alone, for a consumer of lane lines only.
    Output("road_geometry", "road_geometry", RoadGeometry,
           lambda p: road_messages.road_geometry(p.ground_header, p.road),
           needs_road=True, requires=frozenset({SEMANTIC})),
    Output("lanes", "lanes", LaneBoundaryArray,
           lambda p: road_messages.lane_array(p.ground_header, p.road),
           needs_road=True, requires=frozenset({LANE})),
    Output("lanes_markers", "lanes/markers", MarkerArray,
           lambda p: road_messages.lane_markers(p.ground_header, p.road),
           needs_road=True, viewer_only=True, requires=frozenset({SEMANTIC})),
    # Free distance per bearing, as Nav2's obstacle layer takes a laser.
    Output("drivable_scan", "drivable/scan", LaserScan,
           lambda p: road_messages.drivable_scan(p.ground_header, p.road.edges),
           needs_road=True, requires=frozenset({SEMANTIC})),
    Output("overlay", "overlay", Image, _overlay, viewer_only=True),
)
# Road outputs that use the lane lines / the drivable edges (the others are not computed).
ROAD_LANES = frozenset({"road_geometry", "lanes", "lanes_markers"})
ROAD_EDGES = frozenset({"road_geometry", "lanes_markers", "drivable_scan"})
BY_NAME = {o.name: o for o in OUTPUTS}
# Rows that need the camera's lookup (needs_grids) but not the grids themselves.
NO_GRIDS_NEEDED = frozenset({"points", "segmentation_points"})
# Outputs that need the network's per-pixel confidence (Result.confidence).
NEEDS_CONFIDENCE = frozenset({"segmentation_confidence"})
# Published for every processed frame, even when empty: the sign of life downstream.
ALWAYS = frozenset({"detections"})
# The latched per-frame outputs (the grids): the node builds them for every frame it
# processes, subscribed or not, so that a transient-local subscriber joining later (Nav2's
# static layer) gets the newest; they cost well under a millisecond.
KEPT_FOR_LATE_JOINERS = frozenset(o.name for o in OUTPUTS if o.per_frame
                                  and o.qos.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL)


def supported(adapter: ModelAdapter) -> tuple[Output, ...]:
    """The rows a network can fill (ModelAdapter.products)."""
    return tuple(o for o in OUTPUTS if o.requires <= adapter.products)


def enabled_outputs(config) -> frozenset[str]:
    """Names of the per-frame outputs ``config`` switches on (those with no switch always
    are) that its model produces."""
    return frozenset(o.name for o in supported(config.adapter) if o.per_frame
                     and (o.enabled_by is None or getattr(config, o.enabled_by)))


def planner_outputs(adapter: ModelAdapter | None = None) -> frozenset[str]:
    """What a deployed node with ``adapter`` (default: the default model's) typically
    publishes per frame: no debug pictures, no opt-ins."""
    return frozenset(o.name for o in supported(adapter or registry.adapter(registry.DEFAULT_MODEL))
                     if o.per_frame and o.enabled_by is None and not o.viewer_only)


def model_outputs(products: ModelProducts) -> dict[str, object]:
    """The model-description messages (``per_frame=False`` rows), by output name."""
    return {o.name: o.build(products) for o in OUTPUTS if not o.per_frame}
