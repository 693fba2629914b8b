"""The surround fusion rule (core/fusion.py) and the several-cameras settings."""
import math

import numpy as np
import pytest

from hybridnets_ros.core.bev import UNSEEN, BevProjector, GridSpec
from hybridnets_ros.core.fusion import CameraView, SurroundFusion, ground_distance
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.config import ConfigError, NodeConfig

GRID = GridSpec(1.0, 0.0, 4.0, 0.0, 1.0)  # one row of four cells


def view(values, distance, stamp):
    values = np.array([values], np.int8)
    return CameraView(values, values.copy(), np.array([distance], np.float32), stamp)


def test_newest_result_wins_where_both_see():
    fusion = SurroundFusion(GRID)
    old = view([0, 0, 0, UNSEEN], [1, 1, 1, 1], stamp=100)
    new = view([UNSEEN, 100, 100, UNSEEN], [9, 9, 9, 9], stamp=200)
    assert fusion.fuse([new, old]) == 100
    assert fusion.drivable.tolist() == [[0, 100, 100, UNSEEN]]
    assert fusion.owner.tolist() == [[1, 0, 0, -1]]


def test_nearer_camera_wins_on_equal_stamps():
    fusion = SurroundFusion(GRID)
    a = view([0, 0, 0, 0], [1, 2, 3, 4], stamp=5)
    b = view([100, 100, 100, UNSEEN], [4, 3, 2, 1], stamp=5)
    assert fusion.fuse([a, b]) == 5
    assert fusion.drivable.tolist() == [[0, 0, 100, 0]]
    assert fusion.lane.tolist() == [[0, 0, 100, 0]]


def test_stamp_is_the_oldest_that_contributed_a_cell():
    fusion = SurroundFusion(GRID)
    covered = view([0, 0, UNSEEN, UNSEEN], [1, 1, 1, 1], stamp=1)   # fully painted over
    newer = view([100, 100, UNSEEN, UNSEEN], [1, 1, 1, 1], stamp=2)
    newest = view([UNSEEN, UNSEEN, 0, UNSEEN], [1, 1, 1, 1], stamp=3)
    assert fusion.fuse([covered, newer, newest]) == 2
    assert fusion.fuse([view([UNSEEN] * 4, [1] * 4, 7)]) is None
    assert (fusion.drivable == UNSEEN).all()


POSES = {"front": (0.0, 0.0, 1.5, 0.0, 0.2, 0.0),
         "left": (0.0, 0.5, 1.5, 0.0, 0.2, math.pi / 2),
         "right": (0.0, -0.5, 1.5, 0.0, 0.2, -math.pi / 2)}


def test_three_cameras_cover_ahead_left_and_right():
    grid = NodeConfig().fused_grid
    assert (grid.width, grid.height) == (600, 600)
    views = []
    for stamp, pose in enumerate(POSES.values()):
        camera = default_camera(640, 360, pose, hfov_deg=110.0)  # wide: neighbours overlap
        classes = SyntheticRoad(camera, vehicles=False).render()[1]
        projector = BevProjector(camera, grid)
        drivable, lane = projector.project(classes)
        views.append(CameraView(drivable.copy(), lane.copy(), ground_distance(projector), stamp))
    fusion = SurroundFusion(grid)
    assert fusion.fuse(views) == 0
    seen = fusion.drivable != UNSEEN

    def cell(x, y):  # row, column of a ground point
        return int((y - grid.y_min) / grid.resolution), int((x - grid.x_min) / grid.resolution)
    for x, y, owner in ((10, 0, 0), (0, 10, 1), (0, -10, 2)):
        assert seen[cell(x, y)] and fusion.owner[cell(x, y)] == owner, (x, y)
    assert not seen[cell(-10, 0)]  # behind: nobody looks there
    # The front camera sees the road ahead; the left one the grass beyond the road edge.
    assert fusion.drivable[cell(10, 0)] == 0 and fusion.drivable[cell(0, 8)] == 100
    # Where left and front overlap, the newer (left, stamp 1) wins.
    both = (views[0].drivable != UNSEEN) & (views[1].drivable != UNSEEN)
    assert both.any() and (fusion.owner[both] == 1).all()


@pytest.mark.parametrize("bad, words", [
    (dict(cameras=["front", "front"]), "unique"),
    (dict(cameras=["front", "2nd"]), "ROS names"),
    (dict(cameras=["a b"]), "ROS names"),
    (dict(cameras=[1]), "list of strings"),
    (dict(cameras=["front"], camera_poses=[0.0] * 5), "camera_poses"),
    (dict(camera_poses=[0.0] * 6), "camera_poses"),
    (dict(cameras=["front"], fused_x_range=[5.0, -5.0]), "fused_x_range"),
    (dict(cameras=["front"], fused_y_range=[-500.0, 500.0]), "fused grid"),
    (dict(fused_rate=0.0), "fused_rate"),
])
def test_bad_camera_settings_are_refused(bad, words):
    with pytest.raises(ConfigError, match=words):
        NodeConfig().with_changes(**bad)


def test_each_camera_gets_its_pose():
    config = NodeConfig().with_changes(cameras=["front", "rear/wide"],
                                       camera_poses=[1, 0, 1.5, 0, 0, 0, -1, 0, 1.5, 0, 0, 3.14])
    assert config.camera_config(1).camera_pose == (-1.0, 0.0, 1.5, 0.0, 0.0, 3.14)
    tf = NodeConfig().with_changes(cameras=["front"])
    assert tf.camera_config(0).camera_pose == ()  # no poses: TF per image frame id
