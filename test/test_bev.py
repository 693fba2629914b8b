"""Bird's-eye grids against ground-plane renders through a known camera."""
import math

import numpy as np
import pytest

from hybridnets_ros.core.bev import UNSEEN, BevProjector, GridSpec, drivable_boundary
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.models.hybridnets.spec import SEG_LANE, SEG_ROAD
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera

GRID = GridSpec()  # 0.1 m, 0..40 m forward, +-10 m lateral
CELL = GRID.resolution


def lane_class_map(camera, lines=(-1.75, 1.75)):
    _, classes = SyntheticRoad(camera, lines=lines, dashed=False, vehicles=False).render(0.0)
    return classes


def lane_cells_by_column(lane_grid):
    """{x centre: [y centres of lane cells]} for every grid column."""
    out = {}
    for col in range(lane_grid.shape[1]):
        rows = np.nonzero(lane_grid[:, col] == 100)[0]
        out[GRID.x_min + (col + 0.5) * CELL] = GRID.y_min + (rows + 0.5) * CELL
    return out


def test_straight_lanes_land_on_their_true_positions():
    camera = default_camera(pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    _, lane = BevProjector(camera, GRID).project(lane_class_map(camera))
    near = 1.5 / math.tan(math.atan(camera.height / 2 / camera.K[1, 1]))  # closest visible ground
    columns = lane_cells_by_column(lane)
    checked = 0
    for x, ys in columns.items():
        if x < near + 0.5:
            continue
        for true_y in (-1.75, 1.75):
            nearby = ys[np.abs(ys - true_y) < 1.0]
            assert len(nearby), f"no lane cell near y={true_y} at x={x:.2f}"
            assert np.all(np.abs(nearby - true_y) <= 0.075 + CELL + 1e-9), (x, nearby)
        assert np.all(np.min(np.abs(ys[:, None] - np.array([-1.75, 1.75])), axis=1) <= 0.075 + CELL + 1e-9)
        checked += 1
    assert checked > 330  # x from ~2.6 m to 40 m


def test_a_pitch_change_moves_the_lanes_as_predicted():
    pitch = math.radians(2.0)
    true_camera = default_camera(pose=(0.0, 0.0, 1.5, 0.0, pitch, 0.0))
    classes = lane_class_map(true_camera)
    # The true pose puts them back in place ...
    _, lane = BevProjector(true_camera, GRID).project(classes)
    ys = np.concatenate([v for x, v in lane_cells_by_column(lane).items() if 5 < x < 35])
    assert np.all(np.min(np.abs(ys[:, None] - np.array([-1.75, 1.75])), axis=1) <= 0.075 + CELL)
    # ... while a level pose maps each line point to where its pixel's ray meets the ground.
    level = default_camera(pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    _, lane = BevProjector(level, GRID).project(classes)
    for true_x in (6.0, 10.0, 15.0):
        for true_y in (-1.75, 1.75):
            uv, _ = true_camera.project(np.array([[true_x, true_y, 0.0]]))
            predicted = level.intersect_ground(level.pixel_rays(uv))[0]
            assert predicted[0] > true_x  # looking down tilts the world away: lanes recede
            col = int((predicted[0] - GRID.x_min) / CELL)
            near_rows = np.nonzero(lane[:, max(col - 1, 0):col + 2] == 100)[0]
            lane_ys = GRID.y_min + (near_rows + 0.5) * CELL
            assert np.min(np.abs(lane_ys - predicted[1])) <= 0.075 + CELL, (true_x, true_y, predicted)


def test_only_visible_ground_is_seen():
    camera = default_camera(pose=(0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    everything_road = np.full((camera.height, camera.width), SEG_ROAD, np.uint8)
    drivable, lane = BevProjector(camera, GRID).project(everything_road)
    near = 1.5 * camera.K[1, 1] / (camera.height / 2)
    x = GRID.x_min + (np.arange(GRID.width) + 0.5) * CELL
    y = GRID.y_min + (np.arange(GRID.height) + 0.5) * CELL
    xx, yy = np.meshgrid(x, y)
    half_fov = math.atan(camera.width / 2 / camera.K[0, 0])
    inside = (xx > near + CELL) & (np.abs(yy) < xx * math.tan(half_fov) - CELL)
    outside = (xx < near - CELL) | (np.abs(yy) > xx * math.tan(half_fov) + CELL)
    assert np.all(drivable[inside] == 0) and np.all(lane[inside] == 0)
    assert np.all(drivable[outside] == UNSEEN) and np.all(lane[outside] == UNSEEN)


def test_pixels_above_the_horizon_never_reach_the_grid():
    camera = default_camera(pose=(0.0, 0.0, 1.5, 0.0, math.radians(-15), 0.0))  # looking up
    horizon_row = int(camera.K[1, 2] + camera.K[1, 1] * math.tan(math.radians(15)))
    classes = np.zeros((camera.height, camera.width), np.uint8)
    classes[:horizon_row] = SEG_LANE  # sky labelled lane
    drivable, lane = BevProjector(camera, GRID).project(classes)
    assert not np.any(lane == 100)
    # looking 15 deg up with a ~42 deg vertical view, ground is visible from ~14.3 m only
    near = 1.5 / math.tan(math.atan(camera.height / 2 / camera.K[1, 1]) - math.radians(15))
    cols_near = int((near - 0.3) / CELL)
    assert np.all(drivable[:, :cols_near] == UNSEEN)
    assert np.any(drivable[:, int((near + 1) / CELL):] == 100)


def test_distortion_is_applied_when_given():
    camera = default_camera()
    distorted = CameraModel.from_pose(camera.K, camera.width, camera.height,
                                      (0, 0, 1.5, 0, 0, 0), D=[-0.3, 0.1, 0, 0, 0])
    a = BevProjector(camera, GRID)
    b = BevProjector(distorted, GRID)
    assert not np.array_equal(a._index, b._index)
    # barrel distortion pulls the image edges in: more of the grid is in view
    assert b.seen_fraction > a.seen_fraction


def test_boundary_and_points():
    drivable = np.full((5, 6), 100, np.int8)
    drivable[1:4, 1:4] = 0
    drivable[0, 5] = UNSEEN
    boundary = drivable_boundary(drivable)
    assert boundary.sum() == 5 * 5 - 9  # the ring around the 3x3 free block
    grid = GridSpec(1.0, 0.0, 6.0, 0.0, 5.0)
    projector = BevProjector(default_camera(), grid)
    points = projector.cell_points(boundary)
    assert points.shape == (16, 3) and points.dtype == np.float32
    assert {tuple(p) for p in points[:, :2]} >= {(0.5, 0.5), (4.5, 4.5)}


def test_bad_calibration_is_refused():
    K = np.eye(3)
    K[0, 0] = np.nan
    with pytest.raises(ValueError, match="K must be finite"):
        CameraModel.from_pose(K, 640, 480, (0, 0, 1, 0, 0, 0))
    with pytest.raises(ValueError, match="distortion"):
        CameraModel.from_pose(np.eye(3), 640, 480, (0, 0, 1, 0, 0, 0), D=[np.inf, 0, 0, 0, 0])
    for size in (6, 15, 100_000):  # OpenCV would raise (or allocate without bound) later
        with pytest.raises(ValueError, match=f"{size} distortion coefficients"):
            CameraModel.from_pose(np.eye(3), 640, 480, (0, 0, 1, 0, 0, 0), D=np.full(size, 0.01))
