"""The model family: depth-based and class-based grids on scenes of known geometry, the
depth point cloud, the outputs each family has, and its settings and weights errors."""
from __future__ import annotations

import numpy as np
import pytest
from std_msgs.msg import Header

from hybridnets_ros.core.bev import FREE, OCCUPIED, UNSEEN, BevProjector, GridSpec, class_values
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.depth_grid import DepthProjector, class_lookup
from hybridnets_ros.core.registry import ADAPTERS as FAMILIES

HYCTAS, HYDRA = FAMILIES["hyctas"], FAMILIES["hydra"]
from hybridnets_ros.core.synthetic import SyntheticRoad
from hybridnets_ros.pipeline.config import ConfigError, NodeConfig
from hybridnets_ros.pipeline.factory import build_pipeline, resolve_weights
from hybridnets_ros.ros import messages
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.ros.frame import FrameProcessor

GRID = GridSpec(0.1, 0.0, 20.0, -5.0, 5.0)
# 320x180 pinhole, 1.5 m above the ground looking straight ahead
CAMERA = CameraModel.from_pose(CameraModel.intrinsics(200.0, 200.0, 160.0, 90.0), 320, 180,
                               (0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
SKY, BUILDING, ROAD, SIDEWALK, VEGETATION, CAR = range(6)
BOX_X, BOX_HALF_WIDTH, BOX_HEIGHT = 10.0, 1.0, 1.2


def cell_of(x: float, y: float) -> tuple[int, int]:
    return (int(np.floor((y - GRID.y_min) / GRID.resolution)),  # as the grid bins points
            int(np.floor((x - GRID.x_min) / GRID.resolution)))


def box_on_road(box_class: int = CAR) -> tuple[np.ndarray, np.ndarray]:
    """REP-118 depth and Hydra classes of a flat road with a box standing on it: its front
    face at x = BOX_X, |y| <= BOX_HALF_WIDTH, 0..BOX_HEIGHT m high; sky above the horizon."""
    rays = CAMERA.pixel_rays()                            # optical z = 1: depth = distance
    origin = CAMERA.t_ground_optical
    to_ground = np.where(rays[..., 2] < 0, -origin[2] / np.minimum(rays[..., 2], -1e-9), np.inf)
    to_box = (BOX_X - origin[0]) / rays[..., 0]
    hit = origin + to_box[..., None] * rays
    on_box = ((np.abs(hit[..., 1]) <= BOX_HALF_WIDTH) & (hit[..., 2] >= 0)
              & (hit[..., 2] <= BOX_HEIGHT) & (to_box < to_ground))
    depth = np.where(on_box, to_box, to_ground).astype(np.float32)
    classes = np.where(on_box, box_class, np.where(np.isfinite(to_ground), ROAD, SKY))
    depth[classes == SKY] = 1000.0  # the network says something for the sky: ignored
    return depth, classes.astype(np.uint8)


def hydra_grid(depth, classes, obstacles=(BUILDING, SIDEWALK, VEGETATION, CAR)):
    return DepthProjector(CAMERA, GRID).occupancy(
        depth, classes, class_lookup([ROAD]), class_lookup(obstacles), class_lookup([SKY]), 0.3)


def plain_occupancy(projector, depth, classes, drivable, obstacle, skip, obstacle_height):
    """The grid rule (core.depth_grid) written plainly over every point."""
    xyz = projector.points(depth).reshape(-1, 3)
    grid = projector.grid
    col = np.floor((xyz[:, 0] - grid.x_min) / grid.resolution)
    row = np.floor((xyz[:, 1] - grid.y_min) / grid.resolution)
    classes, depth = classes.reshape(-1), depth.reshape(-1)
    with np.errstate(invalid="ignore"):
        inside = ((col >= 0) & (col < grid.width) & (row >= 0) & (row < grid.height)
                  & (depth > 0) & ~skip[classes])
    cell = (row * grid.width + col)[inside].astype(np.int64)
    height, classes = xyz[inside, 2], classes[inside]
    values = np.full(grid.height * grid.width, UNSEEN, np.int8)
    values[cell[drivable[classes] & (np.abs(height) <= obstacle_height)]] = FREE
    values[cell[obstacle[classes] | (height > obstacle_height)]] = OCCUPIED
    return values.reshape(grid.height, grid.width)


def test_occupancy_is_the_plain_rule_on_random_depth():
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.3, 60, (CAMERA.height, CAMERA.width)).astype(np.float32)
    depth[rng.uniform(size=depth.shape) < 0.02] = np.nan
    depth[rng.uniform(size=depth.shape) < 0.02] = -1.0
    classes = rng.integers(0, 6, depth.shape).astype(np.uint8)
    lookups = class_lookup([ROAD]), class_lookup([BUILDING, CAR]), class_lookup([SKY])
    projector = DepthProjector(CAMERA, GRID)
    expected = plain_occupancy(projector, depth, classes, *lookups, 0.3)
    assert (expected == FREE).any() and (expected == OCCUPIED).any() and (expected == UNSEEN).any()
    np.testing.assert_array_equal(projector.occupancy(depth, classes, *lookups, 0.3), expected)


def test_a_box_on_the_road_is_occupied_at_its_distance_and_hides_what_is_behind():
    grid = hydra_grid(*box_on_road())
    row_centre = cell_of(BOX_X, 0.0)[0]
    box_rows = slice(*(cell_of(0, y)[0] for y in (-BOX_HALF_WIDTH + 0.1, BOX_HALF_WIDTH - 0.1)))
    occupied_cols = np.nonzero((grid[box_rows] == OCCUPIED).all(axis=0))[0]
    assert list(occupied_cols) == [cell_of(BOX_X, 0)[1]]  # exactly the face's column, 10.0 m
    # The road up to the box: every cell near by; farther, where one pixel row spans more
    # than a cell (x^2 / (f h) > 0.1 m from 5.5 m on), the cells between rows stay unseen.
    nearest = 1.5 * 200 / (179 - 90)  # the ground the bottom pixel row sees
    assert (grid[row_centre, cell_of(nearest + 0.1, 0)[1]:cell_of(5.0, 0)[1]] == FREE).all()
    assert set(grid[row_centre, cell_of(5.0, 0)[1]:cell_of(BOX_X - 0.3, 0)[1]]) == {FREE, UNSEEN}
    assert (grid[box_rows, cell_of(BOX_X + 0.5, 0)[1]:] == UNSEEN).all()  # in its shadow
    assert (grid[cell_of(0, 3.0)[0], cell_of(BOX_X + 2, 0)[1]] == FREE)   # road beside it
    assert not (grid == OCCUPIED)[:, cell_of(BOX_X + 0.2, 0)[1]:].any()  # sky left out


def test_height_alone_makes_a_misclassified_box_an_obstacle():
    depth, classes = box_on_road(box_class=ROAD)        # the network calls the box road
    grid = hydra_grid(depth, classes)
    row, col = cell_of(BOX_X, 0.0)
    assert grid[row, col] == OCCUPIED                    # its top is above 0.3 m
    depth, classes = box_on_road(box_class=CAR)
    grid = hydra_grid(depth, classes, obstacles=())      # car not an obstacle class
    assert grid[row, col] == OCCUPIED


def test_depth_cloud_has_the_box_points_and_their_class():
    depth, classes = box_on_road()
    projector = DepthProjector(CAMERA, GRID)
    cloud = projector.cloud(depth, classes, class_lookup([SKY]), step=1)
    assert set(np.unique(cloud["class"])) == {ROAD, CAR}
    box = cloud[cloud["class"] == CAR]
    np.testing.assert_allclose(box["x"], BOX_X, atol=1e-4)
    assert np.abs(box["y"]).max() <= BOX_HALF_WIDTH + 1e-4
    assert 0 <= box["z"].min() and box["z"].max() <= BOX_HEIGHT + 1e-4
    road = cloud[cloud["class"] == ROAD]
    np.testing.assert_allclose(road["z"], 0.0, atol=1e-4)
    decimated = projector.cloud(depth, classes, class_lookup([SKY]), step=4)
    assert len(cloud) / 20 < len(decimated) < len(cloud) / 12
    msg = messages.labelled_cloud(Header(frame_id="base_link"), decimated)
    assert [f.name for f in msg.fields] == ["x", "y", "z", "class"]
    assert msg.point_step == 16 and len(msg.data) == 16 * len(decimated)


def test_class_grid_marks_classes_on_the_ground_plane():
    """HyCTAS: road free, a person's pixels occupied, sky (neither) unseen."""
    _, road_classes = SyntheticRoad(CAMERA, vehicles=False).render(0.0)
    seg = np.full(road_classes.shape, HYCTAS.seg_classes.index("sky"), np.uint8)
    seg[road_classes > 0] = HYCTAS.seg_classes.index("road")
    seg[160:, 150:170] = HYCTAS.seg_classes.index("person")
    drivable, obstacle = HYCTAS.class_ids(HYCTAS.drivable_classes), HYCTAS.class_ids(HYCTAS.obstacle_classes)
    grid = BevProjector(CAMERA, GRID).project_classes(seg, class_values(drivable, obstacle))
    # pixel rows 160..179 look at the ground 7.5..15 m... nearer: row v sees x = 1.5*200/(v-90)
    x_near, x_far = 1.5 * 200 / (180 - 90), 1.5 * 200 / (160 - 90)
    row, col = cell_of((x_near + x_far) / 2, 0.0)
    assert grid[row, col] == OCCUPIED
    assert grid[cell_of(8.0, 0.0)] == FREE
    assert grid[cell_of(19.0, 4.9)] in (FREE, UNSEEN) and (grid == UNSEEN).any()


def test_settings_name_bad_classes_and_missing_weights(monkeypatch, tmp_path):
    with pytest.raises(ConfigError, match="hydra has no class 'person'"):
        NodeConfig.from_mapping({"model": "hydra", "obstacle_classes": ["person"]})
    with pytest.raises(ConfigError, match="model must be one of hybridnets, hydra, hyctas, yolop"):
        NodeConfig.from_mapping({"model": "yolo"})
    defaults = class_values(HYCTAS.class_ids(HYCTAS.drivable_classes),
                            HYCTAS.class_ids(HYCTAS.obstacle_classes))
    surfaces = HYCTAS.surfaces(NodeConfig.from_mapping({"model": "hyctas"}))
    np.testing.assert_array_equal(surfaces.values, defaults)  # empty settings: the defaults
    monkeypatch.setenv("HYBRIDNETS_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="download-weights --model hydra"):
        resolve_weights(NodeConfig.from_mapping({"model": "hydra"}))
    with pytest.raises(ConfigError, match="hyctas_s.pth from .* no public address"):
        resolve_weights(NodeConfig.from_mapping({"model": "hyctas"}))
    (tmp_path / "ExpKITTI_joint.ckpt").write_bytes(b"not a checkpoint")
    assert resolve_weights(NodeConfig.from_mapping({"model": "hydra"})) == tmp_path / "ExpKITTI_joint.ckpt"
    from hybridnets_ros.core.weights import WeightsError
    with pytest.raises(WeightsError, match="cannot read .* as a PyTorch checkpoint"):
        build_pipeline(NodeConfig.from_mapping({"model": "hydra", "backend": "torch"}))


@pytest.mark.parametrize("model, extra", [("hydra", {"input_scale": 0.5}),
                                          ("hyctas", {"hyctas_path": "native"})])
def test_frame_outputs_are_what_the_family_produces(model, extra):
    config = NodeConfig.from_mapping(dict(model=model, backend="onnxruntime", device="cpu",
                                          allow_random_weights=True, publish_points=True,
                                          camera_resolution=[320, 180], **extra))
    processor = FrameProcessor(build_pipeline(config), config)
    processor.set_camera_info(camera_info_from_model(CAMERA, "camera_optical_frame"))
    bgr = SyntheticRoad(CAMERA).render(0.0)[0]
    outcome = processor.process(messages.image(Header(frame_id="camera_optical_frame"), bgr, "bgr8"))
    common = {"drivable_mask", "segmentation_label", "segmentation_confidence",
              "segmentation_points", "segmentation_color", "drivable_grid", "drivable_points",
              "road_geometry", "drivable_scan", "lanes_markers", "overlay"}
    assert set(outcome.messages) == common | ({"depth", "points"} if model == "hydra" else set())
    family = FAMILIES[model]
    label = outcome.messages["segmentation_label"]
    labels = np.frombuffer(label.data, np.uint8).reshape(180, 320)
    assert labels.max() < len(family.seg_classes)
    colour = np.frombuffer(outcome.messages["segmentation_color"].data, np.uint8).reshape(180, 320, 3)
    assert (colour == np.asarray(family.seg_colors_rgb, np.uint8)[labels]).all()
    if model == "hydra":
        depth = outcome.messages["depth"]
        assert (depth.encoding, depth.step, depth.header.frame_id) == ("32FC1", 320 * 4, "camera_optical_frame")
        np.testing.assert_array_equal(np.frombuffer(depth.data, np.float32).reshape(180, 320),
                                      outcome.result.depth_m)
        assert outcome.messages["points"].header.frame_id == "base_footprint"
    info = processor.model_products(Header())
    assert info.seg_class_names == family.seg_classes and info.class_names == ()
    assert HYDRA.products > {"depth"} and "detections" not in family.products
