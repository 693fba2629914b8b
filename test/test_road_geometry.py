"""Road geometry against lane lines painted on a flat road through a known 1280x720 camera.

The truth is drawn with OpenCV's projectPoints (its own lens model), independent of the
package's ground mapping; tolerances are those of docs/road_geometry.md.
"""
from __future__ import annotations

import functools
import json
import math

import cv2
import numpy as np
import pytest

from hybridnets_ros.core.camera import CameraModel, optical_transform
from hybridnets_ros.core.road_geometry import RoadGeometryEstimator, RoadGeometrySettings

W, H = 1280, 720
K = CameraModel.intrinsics(1000.0, 1000.0, 640.0, 360.0)
LEVEL = (1.5, 0.0, 1.4, 0.0, 0.06, 0.0)  # 1.4 m up, 3.4 deg down
TILTED = (1.5, 0.1, 1.4, math.radians(2), math.radians(5), math.radians(-3))
PLUMB_BOB = (-0.28, 0.09, 0.0006, -0.0004, -0.015)
MARKING_M = 0.15
# Tolerances (docs/road_geometry.md): lateral error of a line over 6-25 m ...
LATERAL_M = {6.0: 0.03, 20.0: 0.05, 25.0: 0.08}
WIDTH_M, OFFSET_M, HEADING_RAD, CURVATURE_1PM = 0.03, 0.02, 0.003, 0.0005


@functools.cache
def camera(pose=LEVEL, D=None) -> CameraModel:
    return CameraModel.from_pose(K, W, H, pose, D=D)


_ESTIMATORS: dict[int, RoadGeometryEstimator] = {}


def estimator_of(cam: CameraModel) -> RoadGeometryEstimator:
    """One per (cached) camera: its tables are built once for the module's tests."""
    return _ESTIMATORS.setdefault(id(cam), RoadGeometryEstimator())


def project(pose, D, points: np.ndarray) -> np.ndarray:
    """Ground points (N, 3) -> pixels by OpenCV (the truth's own path)."""
    R, t = optical_transform(pose)
    rvec, _ = cv2.Rodrigues(R.T)
    uv, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, -R.T @ t, K,
                              np.zeros(5) if D is None else np.asarray(D))
    return uv.reshape(-1, 2)


def in_lens(pose, ground_xy: np.ndarray) -> np.ndarray:
    """Ground points within 50 deg of the optical axis (the test lens's field is one-to-one
    there: its radial polynomial folds near 58 deg)."""
    R, t = optical_transform(pose)
    p = (np.column_stack([ground_xy, np.zeros(len(ground_xy))]) - t) @ R
    return (p[:, 2] > 0) & (np.hypot(p[:, 0], p[:, 1]) <= math.tan(math.radians(50)) * p[:, 2])


def paint(lines, pose=LEVEL, D=None, dashes=None, occluders=(), x_far=60.0) -> np.ndarray:
    """A 255 lane mask of markings ``MARKING_M`` wide along y = c0 + c1 x + c2 x^2 for each
    (c0, c1, c2) in ``lines``; ``dashes`` = (dash, gap) metres makes them dashed; each
    occluder (x0, x1, y0, y1, height) is a box that hides what is behind it."""
    mask = np.zeros((H, W), np.uint8)
    x = np.arange(pose[0] + 1.0, x_far, 0.05)  # from 1 m ahead of the camera
    for c0, c1, c2 in lines:
        y = c0 + c1 * x + c2 * x * x
        normal = np.column_stack([-(c1 + 2 * c2 * x), np.ones_like(x)])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True)
        centre = np.column_stack([x, y])
        keep = np.ones_like(x, bool) if dashes is None else (x % sum(dashes)) < dashes[0]
        runs = np.split(np.arange(len(x)), np.flatnonzero(np.diff(keep.astype(int))) + 1)
        for run in runs:
            if not keep[run[0]] or len(run) < 2:
                continue
            left = project(pose, D, np.column_stack([centre[run] + normal[run] * MARKING_M / 2,
                                                     np.zeros(len(run))]))
            right = project(pose, D, np.column_stack([centre[run] - normal[run] * MARKING_M / 2,
                                                      np.zeros(len(run))]))
            seen = in_lens(pose, centre[run])
            # quad by quad: a distortion polynomial maps rays beyond its fold back into the
            # image (ghosts no lens shows), so quads there are left out
            for i in np.flatnonzero(seen[:-1] & seen[1:]):
                quad = np.array([left[i], left[i + 1], right[i + 1], right[i]])
                cv2.fillConvexPoly(mask, np.round(quad * 16).astype(np.int32), 255, cv2.LINE_8,
                                   shift=4)
    for x0, x1, y0, y1, height in occluders:
        corners = np.array([[a, b, c] for a in (x0, x1) for b in (y0, y1) for c in (0.0, height)])
        hull = cv2.convexHull(np.round(project(pose, D, corners) * 16).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 0, cv2.LINE_8, shift=4)
    return mask


def lateral_errors(line, truth) -> dict[float, float]:
    """|y(x) - truth(x)| of a line's polyline at the checked distances it covers."""
    c0, c1, c2 = truth
    out = {}
    for x in LATERAL_M:
        if line.range_m[0] - 0.5 <= x <= line.range_m[1] + 0.5:
            y = np.interp(x, line.points[:, 0], line.points[:, 1])
            out[x] = abs(y - (c0 + c1 * x + c2 * x * x))
    return out


def check_lines(geometry, truths, residual_m=0.02, confidence=0.8):
    """Each true line found once, left to right, within the lateral tolerances."""
    assert len(geometry.lanes) == len(truths), [lane.points[:2] for lane in geometry.lanes]
    for lane, truth in zip(geometry.lanes, sorted(truths, key=lambda t: -t[0])):
        errors = lateral_errors(lane, truth)
        assert {20.0, 25.0} <= set(errors), (lane.range_m, errors)  # the near end may be out of view
        for x, error in errors.items():
            assert error <= LATERAL_M[x], (truth, x, error)
        assert lane.side == (1 if truth[0] > 0 else -1)
        assert lane.residual_m < residual_m and confidence < lane.confidence <= 1.0
        assert lane.points.dtype == np.float32 and np.all(np.diff(lane.points[:, 0]) > 0)


def check_ego(ego, left, right):
    """Ego lane against true boundaries (c0, c1, c2) left and right."""
    assert ego.valid
    slope = (left[1] + right[1]) / 2
    cos = 1 / math.sqrt(1 + slope ** 2)
    assert ego.width_m == pytest.approx((left[0] - right[0]) * cos, abs=WIDTH_M)
    assert ego.center_offset_m == pytest.approx(-(left[0] + right[0]) / 2 * cos, abs=OFFSET_M)
    assert ego.heading_rad == pytest.approx(-math.atan(slope), abs=HEADING_RAD)
    assert ego.curvature_1pm == pytest.approx(left[2] + right[2], abs=CURVATURE_1PM)


def estimate(mask, cam=None, drivable=None):
    cam = cam or camera()
    estimator = estimator_of(cam)
    estimator.reset()
    return estimator.update(cam, mask, drivable, 0.0)


STRAIGHT = [(1.75, 0.0, 0.0), (-1.75, 0.0, 0.0)]


def test_straight_lane():
    mask = paint(STRAIGHT)
    geometry = estimate(mask)
    assert estimate(mask > 0).ego == geometry.ego  # the node's bool masks
    check_lines(geometry, STRAIGHT)
    check_ego(geometry.ego, *STRAIGHT)
    assert not any(lane.dashed for lane in geometry.lanes)
    assert geometry.ego.left_id == geometry.lanes[0].id
    assert geometry.ego.right_id == geometry.lanes[1].id


@pytest.mark.parametrize("curvature", [1 / 200, -1 / 200])
def test_curves_both_ways(curvature):
    lines = [(1.6, 0.02, curvature / 2), (-1.9, 0.02, curvature / 2)]
    geometry = estimate(paint(lines))
    check_lines(geometry, lines)
    check_ego(geometry.ego, *lines)
    assert math.copysign(1, geometry.ego.curvature_1pm) == math.copysign(1, curvature)


def test_three_lines_left_to_right():
    lines = [(5.25, 0.0, 0.0), (1.75, 0.0, 0.0), (-1.75, 0.0, 0.0)]
    geometry = estimate(paint(lines))
    check_lines(geometry, lines)
    check_ego(geometry.ego, lines[1], lines[2])
    assert geometry.ego.left_id == geometry.lanes[1].id


def test_dashed_lines_are_joined():
    lines = [(1.75, 0.0, -1 / 400)]
    dashed = paint(lines, dashes=(3.0, 6.0))
    solid = paint([(-1.75, 0.0, -1 / 400)])
    geometry = estimate(np.maximum(dashed, solid))
    check_lines(geometry, lines + [(-1.75, 0.0, -1 / 400)])
    assert [lane.dashed for lane in geometry.lanes] == [True, False]


def test_occluded_line_is_one_line():
    # a car in the left lane, 10-14.5 m ahead, hides part of the left line
    mask = paint(STRAIGHT, occluders=[(10.0, 14.5, 1.2, 3.0, 1.5)])
    assert np.count_nonzero(mask) < np.count_nonzero(paint(STRAIGHT)) * 0.95
    geometry = estimate(mask)
    check_lines(geometry, STRAIGHT)
    check_ego(geometry.ego, *STRAIGHT)
    assert not geometry.lanes[0].dashed


def test_network_like_mask_with_speckle():
    """As a network gives it: at a quarter of the resolution, scaled up blocky, with 30
    false blobs over the road (some touching the lines)."""
    lines = [(1.6, 0.02, 1 / 400), (-1.9, 0.02, 1 / 400)]
    small = cv2.resize(paint(lines), (W // 4, H // 4), interpolation=cv2.INTER_AREA) > 40
    mask = cv2.resize(small.view(np.uint8) * 255, (W, H), interpolation=cv2.INTER_NEAREST)
    rng = np.random.default_rng(0)
    for u, v, radius in zip(rng.integers(0, W, 30), rng.integers(400, H, 30), rng.integers(2, 6, 30)):
        cv2.circle(mask, (int(u), int(v)), int(radius), 255, -1)
    geometry = estimate(mask)
    check_lines(geometry, lines, residual_m=0.08, confidence=0.3)
    check_ego(geometry.ego, *lines)


@pytest.mark.parametrize("distortion", [None, PLUMB_BOB], ids=["pinhole", "plumb_bob"])
def test_tilted_camera_with_distortion(distortion):
    lines = [(1.9, -0.01, 1 / 600), (-1.6, -0.01, 1 / 600)]
    mask = paint(lines, pose=TILTED, D=distortion)
    geometry = estimate(mask, camera(TILTED, distortion))
    check_lines(geometry, lines)
    check_ego(geometry.ego, *lines)


def test_tracking_keeps_ids_and_follows_a_lane_change():
    """The vehicle drifts 0.1 m left per frame (10 Hz) for 20 frames, no motion given (a
    lane change): each line keeps its id as the one it crosses passes under it, and the
    filter follows the lines without lag once it has their rate."""
    cam = camera()
    estimator = estimator_of(cam)
    estimator.reset()
    starts = (5.25, 1.75, -1.75)
    for frame in range(21):
        shift = -0.1 * frame  # the lines move right as the vehicle moves left
        lines = [(c0 + shift, 0.0, 0.0) for c0 in starts]
        geometry = estimator.update(cam, paint(lines, x_far=30.0), None, frame * 0.1)
        if frame == 0:
            ids = [lane.id for lane in geometry.lanes]  # left to right, as starts
        assert [lane.id for lane in geometry.lanes] == ids
        for lane, (c0, _, _) in zip(geometry.lanes, lines):
            assert lane.coefficients[0] == pytest.approx(c0, abs=0.1 if frame < 10 else 0.03)
    # now in the lane left of the start: between the lines that began at 5.25 and 1.75
    assert geometry.ego.valid and (geometry.ego.left_id, geometry.ego.right_id) == tuple(ids[:2])
    assert geometry.ego.center_offset_m == pytest.approx(-1.5, abs=0.03)
    assert geometry.ego.width_m == pytest.approx(3.5, abs=WIDTH_M)


def test_motion_moves_the_tracks():
    """With the vehicle's motion given, a line unseen for a frame is predicted where it is."""
    cam = camera()
    estimator = estimator_of(cam)
    estimator.reset()
    estimator.update(cam, paint(STRAIGHT), None, 0.0)
    # 2 m forward, 0.3 m left, turned 2 deg left: the lines move right and turn right
    yaw = math.radians(2)
    coasting = estimator.update(cam, np.zeros((H, W), np.uint8), None, 0.1, motion=(2.0, 0.3, yaw))
    left = coasting.lanes[0].coefficients
    assert left[0] == pytest.approx(1.45, abs=0.02)
    assert left[1] == pytest.approx(-math.tan(yaw), abs=0.002)
    assert coasting.lanes[0].confidence < 0.6


def test_drivable_edges_and_scan():
    cam = camera()
    # road from y = -3 to y = +4.5 out to 30 m, with a non-drivable block at 12-14 m ahead
    corners = lambda x0, x1, y0, y1: project(LEVEL, None, np.array(  # noqa: E731
        [[x0, y0, 0], [x0, y1, 0], [x1, y1, 0], [x1, y0, 0]], float))
    drivable = np.zeros((H, W), np.uint8)
    xs = np.arange(2.5, 30.0, 0.5)
    outline = np.vstack([np.column_stack([xs, np.full_like(xs, 4.5)]),
                         np.column_stack([xs[::-1], np.full_like(xs, -3.0)])])
    uv = project(LEVEL, None, np.column_stack([outline, np.zeros(len(outline))]))
    cv2.fillPoly(drivable, [np.round(uv * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    cv2.fillPoly(drivable, [np.round(corners(12.0, 14.0, -0.5, 0.5) * 16).astype(np.int32)], 0,
                 cv2.LINE_8, shift=4)
    geometry = estimate(None, cam, drivable)
    assert geometry.lanes == [] and not geometry.ego.valid  # a network without lanes
    edges = geometry.edges
    assert edges.left.shape[1] == 2 and len(edges.left) > 20
    near = (edges.left[:, 0] > 6) & (edges.left[:, 0] < 25)
    assert np.all(np.abs(edges.left[near, 1] - 4.5) <= 0.15)
    near = (edges.right[:, 0] > 6) & (edges.right[:, 0] < 25)
    assert near.sum() > 20 and np.all(np.abs(edges.right[near, 1] + 3.0) <= 0.15)
    bearings = edges.angle_min + np.arange(len(edges.ranges)) * edges.angle_increment
    ahead = np.argmin(np.abs(bearings))
    assert edges.ranges[ahead] == pytest.approx(12.0, abs=0.2)
    assert edges.range_max == 40.0 and edges.ranges.dtype == np.float32
    # 20 deg left the road ends at y = 4.5: x = 4.5 / tan(20 deg)
    left20 = np.argmin(np.abs(bearings - math.radians(20)))
    assert edges.ranges[left20] == pytest.approx(4.5 / math.sin(bearings[left20]), rel=0.03)


@pytest.mark.parametrize("density", [0.3, 1.0])
def test_noise_gives_few_lines(density):
    """A failing network's mask: the largest pieces only are looked at, few lines come out."""
    mask = np.random.default_rng(2).random((H, W)) < density
    geometry = estimate(mask, drivable=mask)
    assert len(geometry.lanes) <= RoadGeometrySettings().max_lines
    assert all(np.isfinite(lane.points).all() for lane in geometry.lanes)


def test_masks_of_another_size_are_refused():
    with pytest.raises(ValueError, match="640x360 does not match the camera's 1280x720"):
        estimate(np.zeros((360, 640), np.uint8))


def test_a_camera_that_sees_no_road_within_range_gives_no_lines():
    # far ahead of the grid and looking up: no image row meets the road within x_max
    cam = CameraModel.from_pose(K, W, H, (500.0, 0.0, 1.4, 0.0, -0.3, 0.0))
    geometry = RoadGeometryEstimator().update(cam, np.full((H, W), 255, np.uint8),
                                              np.full((H, W), 255, np.uint8), 0.0)
    assert geometry.lanes == [] and not geometry.ego.valid
    assert geometry.edges is not None and len(geometry.edges.left) == 0


# --- the command ---

def calibration_yaml(path, K=K, D=PLUMB_BOB):
    path.write_text(
        f"image_width: {W}\nimage_height: {H}\ncamera_name: test\n"
        f"camera_matrix: {{rows: 3, cols: 3, data: {np.ravel(K).tolist()}}}\n"
        "distortion_model: plumb_bob\n"
        f"distortion_coefficients: {{rows: 1, cols: 5, data: {list(map(float, D))}}}\n")
    return path


@pytest.fixture(scope="module")
def painted(tmp_path_factory):
    """A lane mask PNG, a drivable mask PNG and an infer-style npz of both, through the
    plumb_bob camera at TILTED."""
    folder = tmp_path_factory.mktemp("road")
    lines = [(1.75, 0.0, 1 / 400), (-1.75, 0.0, 1 / 400)]
    lane = paint(lines, pose=TILTED, D=PLUMB_BOB)
    drivable = np.zeros((H, W), np.uint8)
    xs = np.arange(TILTED[0] + 1.0, 40.0, 0.25)
    outline = np.vstack([np.column_stack([xs, 4.0 + xs * xs / 800]),
                         np.column_stack([xs[::-1], -4.0 + xs[::-1] ** 2 / 800])])
    keep = in_lens(TILTED, outline)
    uv = project(TILTED, PLUMB_BOB, np.column_stack([outline[keep], np.zeros(keep.sum())]))
    cv2.fillPoly(drivable, [np.round(uv * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    cv2.imwrite(str(folder / "lane.png"), lane)
    cv2.imwrite(str(folder / "drivable.png"), drivable)
    np.savez_compressed(folder / "frame.npz", seg_mask=np.zeros((H, W), np.uint8),
                        lane_mask=(lane > 0).astype(np.uint8),
                        drivable_mask=(drivable > 0).astype(np.uint8))
    return folder, lines, calibration_yaml(folder / "camera.yaml")


def run_command(*args) -> int:
    from hybridnets_ros.cli import main

    return main(["road-geometry", *map(str, args)])


def pose_args(pose=TILTED):
    return ["--camera-pose", *pose]


@pytest.mark.parametrize("source", ["png", "npz"])
def test_command_json_and_picture(painted, tmp_path, source):
    folder, lines, yaml_path = painted
    masks = ([folder / "lane.png", "--drivable", folder / "drivable.png"] if source == "png"
             else [folder / "frame.npz"])
    out, picture = tmp_path / "road.json", tmp_path / "road.png"
    assert run_command(*masks, "--camera-info", yaml_path, *pose_args(), "--json", out,
                       "--image", picture) == 0
    result = json.loads(out.read_text())
    assert [lane["side"] for lane in result["lanes"]] == [1, -1]
    for lane, (c0, c1, c2) in zip(result["lanes"], lines):
        points = np.array(lane["points"])
        assert set(lane) >= {"id", "confidence", "range_m", "residual_m", "dashed"}
        at = (points[:, 0] >= 6) & (points[:, 0] <= 25)
        assert at.sum() > 15
        assert np.all(np.abs(points[at, 1] - (c0 + c1 * points[at, 0] + c2 * points[at, 0] ** 2))
                      <= 0.10)
    ego = result["ego_lane"]
    assert ego["valid"] and ego["width_m"] == pytest.approx(3.5, abs=WIDTH_M)
    assert ego["center_offset_m"] == pytest.approx(0.0, abs=OFFSET_M)
    assert ego["curvature_1pm"] == pytest.approx(1 / 200, abs=CURVATURE_1PM)
    edges = result["drivable_edges"]
    left = np.array(edges["left"])
    at = (left[:, 0] >= 10) & (left[:, 0] <= 25)
    assert at.sum() > 10 and np.all(np.abs(left[at, 1] - (4.0 + left[at, 0] ** 2 / 800)) <= 0.2)
    assert len(edges["ranges"]) > 100 and set(map(type, edges["ranges"])) <= {float, str, type(None)}
    image = cv2.imread(str(picture))
    assert image.shape == (800, 480, 3) and image.std() > 10


def test_command_errors(painted, tmp_path, capsys):
    folder, _, yaml_path = painted
    cases = [
        ([tmp_path / "none.png", "--camera-info", yaml_path, *pose_args()], "none.png: no such file"),
        ([folder / "lane.png", "--camera-info", tmp_path / "no.yaml", *pose_args()],
         "not a camera calibration YAML"),
        ([folder / "lane.png", "--camera-info",
          calibration_yaml(tmp_path / "bad.yaml", K=CameraModel.intrinsics(0, 0, 640, 360)),
          *pose_args()], "bad.yaml: k: "),
        ([folder / "lane.png", "--camera-info", yaml_path, *pose_args((0, 0, -1, 0, 0, 0))],
         "below the ground plane"),
        ([folder / "lane.png", "--drivable", folder / "camera.yaml", "--camera-info", yaml_path,
          *pose_args()], "camera.yaml: not an image"),
    ]
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((360, 640), np.uint8))
    cases.append(([small, "--camera-info", yaml_path, *pose_args()],
                  "lane mask 640x360 does not match the camera's 1280x720"))
    for args, message in cases:
        assert run_command(*args) == 2, message
        assert message in capsys.readouterr().err


def test_settings_are_checked():
    with pytest.raises(ValueError, match="x_min < x_max"):
        RoadGeometrySettings(x_min=30.0, x_max=20.0)


def test_camera_tables_are_built_once_per_calibration():
    cam = camera()
    estimator = estimator_of(cam)
    tables = estimator.tables(cam)
    estimator.update(cam, paint(STRAIGHT, x_far=20.0), None, 0.0)
    # an equal model built anew (a re-sent CameraInfo) keeps them; another pose does not
    assert estimator.tables(CameraModel.from_pose(K, W, H, LEVEL)) is tables
    moved = CameraModel.from_pose(K, W, H, (*LEVEL[:4], LEVEL[4] + 0.01, LEVEL[5]))
    assert estimator.tables(moved) is not tables
    estimator.tables(cam)  # back, for the module's other tests
