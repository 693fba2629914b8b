"""``hybridnets road-geometry``: lane lines, the ego lane and the drivable edges of a saved
mask, for calibration and tuning without a camera (the node's code on one frame)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np

from ..core.bev import UNSEEN, BevProjector, GridSpec
from ..core.camera import CalibrationError, CameraModel
from ..core.road_geometry import RoadGeometry, RoadGeometryEstimator
from ..ros.camera_info import camera_info_from_yaml
from .status import CliError

NPZ_LANE, NPZ_DRIVABLE = "lane_mask", "drivable_mask"  # as `infer --save-npz` writes them
PICTURE_PX_PER_M = 20
PICTURE_HALF_WIDTH_M = 12.0


def add_parser(sub) -> None:
    p = sub.add_parser(
        "road-geometry", help="lane lines, ego lane and drivable edges of a saved mask",
        description="Runs the node's road geometry on one saved mask: a PNG (255 = lane) or an "
                    "`infer --save-npz` file (its lane_mask, and its drivable_mask unless "
                    "--drivable is given). Writes JSON (lanes, ego_lane, drivable_edges; metres "
                    "and radians in the ground frame: x forward, y left) and a bird's-eye picture.")
    p.add_argument("lane_mask", metavar="LANE_MASK", help="lane mask PNG (255 = lane) or .npz")
    p.add_argument("--drivable", metavar="MASK", help="drivable-area mask PNG (255 = drivable) or .npz")
    p.add_argument("--camera-info", required=True, metavar="YAML",
                   help="calibration (camera_calibration_parsers YAML) of the masks' camera")
    p.add_argument("--camera-pose", required=True, type=float, nargs=6,
                   metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                   help="the camera body frame in the ground frame (metres, radians; positive "
                        "pitch looks down)")
    p.add_argument("--json", metavar="OUT.json", help="write the result here (default: stdout)")
    p.add_argument("--image", metavar="OUT.png", help="write a bird's-eye picture here")
    p.set_defaults(func=run)


def run(args) -> int:
    camera = load_camera(args.camera_info, args.camera_pose)
    lane, drivable = read_masks(args.lane_mask, args.drivable)
    for name, mask, path in (("lane", lane, args.lane_mask),
                             ("drivable", drivable, args.drivable or args.lane_mask)):
        if mask is not None and mask.shape != (camera.height, camera.width):
            raise CliError(f"{path}: {name} mask {mask.shape[1]}x{mask.shape[0]} does not match "
                           f"the camera's {camera.width}x{camera.height} ({args.camera_info})")
    estimator = RoadGeometryEstimator()
    geometry = estimator.update(camera, lane, drivable, 0.0)
    text = json.dumps(to_json(geometry), indent=1)
    if args.json:
        _write(Path(args.json), lambda path: path.write_text(text + "\n"))
    else:
        print(text)
    if args.image:
        picture = birds_eye(camera, lane, drivable, geometry, estimator.settings.x_max)
        write_picture(Path(args.image), picture)
    return 0


def load_camera(yaml_path: str, pose) -> CameraModel:
    try:
        info = camera_info_from_yaml(yaml_path, "camera")
        camera = CameraModel.from_pose(np.asarray(info.k), info.width, info.height, pose,
                                       D=info.d, distortion_model=info.distortion_model)
    except CalibrationError as exc:
        raise CliError(f"{yaml_path}: {exc.field}: {exc}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if problem := camera.pose_problem():
        raise CliError(f"--camera-pose {' '.join(f'{v:g}' for v in pose)}: {problem}")
    return camera


def read_masks(lane_path: str, drivable_path: str | None) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(lane, drivable) bool masks; the drivable one from the lane's npz when not given."""
    if lane_path.endswith(".npz"):
        arrays = _npz(lane_path)
        if NPZ_LANE not in arrays:
            raise CliError(f"{lane_path}: no {NPZ_LANE} (it holds {', '.join(arrays) or 'nothing'}; "
                           "the network gave no lane output)")
        lane = arrays[NPZ_LANE] != 0
        drivable = arrays.get(NPZ_DRIVABLE)
        drivable = None if drivable is None else drivable != 0
    else:
        lane, drivable = _png(lane_path), None
    if drivable_path:
        if drivable_path.endswith(".npz"):
            arrays = _npz(drivable_path)
            if NPZ_DRIVABLE not in arrays:
                raise CliError(f"{drivable_path}: no {NPZ_DRIVABLE} (it holds "
                               f"{', '.join(arrays) or 'nothing'})")
            drivable = arrays[NPZ_DRIVABLE] != 0
        else:
            drivable = _png(drivable_path)
    return lane, drivable


def _npz(path: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: cannot read it as npz ({exc})") from None
    for key in (NPZ_LANE, NPZ_DRIVABLE):
        if key in arrays and arrays[key].ndim != 2:
            raise CliError(f"{path}: {key} has shape {arrays[key].shape}, not (height, width)")
    return arrays


def _png(path: str) -> np.ndarray:
    """A mask image: non-zero = the class (a grey image saved as colour is taken too)."""
    if not Path(path).is_file():
        raise CliError(f"{path}: no such file")
    image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise CliError(f"{path}: not an image OpenCV can read")
    if image.ndim == 3:
        if image.shape[2] == 4:
            image = image[..., :3]
        if not (np.array_equal(image[..., 0], image[..., 1])
                and np.array_equal(image[..., 0], image[..., 2])):
            raise CliError(f"{path}: a colour picture, not a mask (one channel, 255 = the class)")
        image = image[..., 0]
    return image >= 128


def _write(path: Path, write) -> None:
    try:
        write(path)
    except OSError as exc:
        raise CliError(f"{path}: cannot write ({exc.strerror or exc})") from None


def write_picture(path: Path, picture: np.ndarray) -> None:
    try:
        written = cv2.imwrite(str(path), picture)
    except cv2.error:  # an extension OpenCV has no encoder for
        written = False
    if not written:
        raise CliError(f"{path}: cannot write the picture there (an existing folder, and a "
                       ".png or .jpg name?)")


def _number(value: float) -> float | str | None:
    """JSON has no NaN or infinity: NaN -> null, +inf -> "inf" (a free bearing)."""
    if math.isnan(value):
        return None
    return "inf" if math.isinf(value) else round(float(value), 4) + 0.0  # no "-0.0"


def to_json(geometry: RoadGeometry) -> dict:
    ego = geometry.ego
    out = {
        "lanes": [{"id": lane.id,
                   "points": np.round(lane.points.astype(np.float64), 3).tolist(),
                   "confidence": round(lane.confidence, 3),
                   "range_m": [round(v, 3) for v in lane.range_m],
                   "side": lane.side, "residual_m": round(lane.residual_m, 4),
                   "dashed": lane.dashed} for lane in geometry.lanes],
        "ego_lane": {"valid": ego.valid, "left_id": ego.left_id, "right_id": ego.right_id,
                     **{name: _number(getattr(ego, name)) for name in
                        ("width_m", "center_offset_m", "heading_rad", "curvature_1pm")}},
    }
    if (edges := geometry.edges) is not None:
        out["drivable_edges"] = {
            "left": np.round(edges.left.astype(np.float64), 3).tolist(),
            "right": np.round(edges.right.astype(np.float64), 3).tolist(),
            "angle_min": round(edges.angle_min, 6), "angle_increment": round(edges.angle_increment, 6),
            "range_max": edges.range_max, "ranges": [_number(v) for v in edges.ranges]}
    return out


def birds_eye(camera: CameraModel, lane: np.ndarray | None, drivable: np.ndarray | None,
              geometry: RoadGeometry, x_max: float) -> np.ndarray:
    """The masks on the ground (grey lane pixels, green drivable area, black unseen), the ego
    lane shaded, each line in its own colour with its id, the drivable edges in orange;
    forward is up, left is left."""
    scale = PICTURE_PX_PER_M
    grid = GridSpec(1.0 / scale, 0.0, x_max, -PICTURE_HALF_WIDTH_M, PICTURE_HALF_WIDTH_M)
    empty = np.zeros((camera.height, camera.width), bool)
    road, lines = BevProjector(camera, grid).project_masks(
        empty if drivable is None else drivable, lane)
    # grid rows are y (from y_min), columns x: to the picture, x up and y to the left
    road, lines = road.T[::-1, ::-1], lines.T[::-1, ::-1]
    picture = np.full(road.shape + (3,), 40, np.uint8)
    picture[road == UNSEEN] = 0
    if drivable is not None:
        picture[road == 0] = (40, 90, 40)
    picture[lines == 100] = (150, 150, 150)

    def pixels(points: np.ndarray) -> np.ndarray:
        return np.round(np.column_stack([(PICTURE_HALF_WIDTH_M - points[:, 1]) * scale,
                                         (x_max - points[:, 0]) * scale]) * 16).astype(np.int32)

    by_id = {lane.id: lane for lane in geometry.lanes}
    ego = geometry.ego
    if ego.valid:
        left, right = by_id[ego.left_id].points, by_id[ego.right_id].points
        near, far = max(left[0, 0], right[0, 0]), min(left[-1, 0], right[-1, 0])
        x = np.linspace(near, far, 32)
        outline = np.vstack([np.column_stack([x, np.interp(x, left[:, 0], left[:, 1])]),
                             np.column_stack([x[::-1], np.interp(x[::-1], right[:, 0], right[:, 1])])])
        shade = picture.copy()
        cv2.fillPoly(shade, [pixels(outline)], (200, 120, 0), cv2.LINE_AA, shift=4)
        picture = cv2.addWeighted(picture, 0.6, shade, 0.4, 0)
    if geometry.edges is not None:
        for edge in (geometry.edges.left, geometry.edges.right):
            if len(edge) > 1:
                cv2.polylines(picture, [pixels(edge)], False, (0, 140, 255), 2, cv2.LINE_AA, shift=4)
    palette = [(0, 0, 255), (0, 255, 255), (255, 0, 255), (255, 255, 0), (0, 255, 0), (255, 128, 0)]
    for lane in geometry.lanes:
        colour = palette[lane.id % len(palette)]
        cv2.polylines(picture, [pixels(lane.points)], False, colour, 2, cv2.LINE_AA, shift=4)
        u, v = pixels(lane.points[:1])[0] // 16
        cv2.putText(picture, f"{lane.id}{' dashed' if lane.dashed else ''}", (int(u) + 4, int(v) - 4),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    for metres in range(10, int(x_max), 10):  # distance ticks
        v = int((x_max - metres) * scale)
        cv2.line(picture, (0, v), (8, v), (255, 255, 255), 1)
        cv2.putText(picture, f"{metres} m", (10, v + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return picture
