"""CameraInfo's lens models (issue 31): plumb_bob, rational_polynomial and equidistant as
OpenCV projects them, in the grids, the 3D detections and the depth points; calibrations
no lens can have refused with the CameraInfo field named; a CameraInfo re-sent or changing
every frame. Without DDS (the node's side: test_node.py)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from hybridnets_ros.core.bev import BevProjector, GridSpec
from hybridnets_ros.core.camera import CameraModel, optical_transform
from hybridnets_ros.core.depth_grid import DepthProjector
from hybridnets_ros.core.objects3d import ground_positions
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.ros.camera_info import camera_info_from_model, camera_info_from_yaml
from hybridnets_ros.ros.frame import (REBUILD_FRAMES, FrameProcessor, GridProblem, ProjectorCache,
                                      camera_model_from_info)
from hybridnets_ros.tools.replay import camera_info_of

WIDTH, HEIGHT = 1280, 720
POSE = (0.5, -0.2, 1.6, np.radians(1.0), np.radians(8.0), np.radians(5.0))
PINHOLE_K = CameraModel.intrinsics(700.0, 690.0, 650.0, 350.0)
FISHEYE_K = CameraModel.intrinsics(420.0, 415.0, 645.0, 355.0)
LENSES = {  # distortion_model: (K, D) of the kinds of lens each is made for
    # a wide barrel lens whose mapping nearly flattens out at the image's corners
    "plumb_bob": (PINHOLE_K, [-0.25, 0.07, 0.001, -0.001, -0.0092]),
    "rational_polynomial": (PINHOLE_K, [2.5, 0.5, 0.001, 0.0005, 0.01, 2.9, 1.2, 0.1]),
    # a fisheye whose image corners lie beyond 90 deg off-axis: they see nothing
    "equidistant": (FISHEYE_K, [0.05, -0.01, 0.002, -0.0005]),
}


def camera_info(model: str, K, D, width: int = WIDTH, height: int = HEIGHT) -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model=model)
    info.k = [float(v) for v in np.ravel(K)]
    info.d = [float(v) for v in D]
    return info


def opencv_projection(model: str, K, D, points: np.ndarray, pose=POSE) -> np.ndarray:
    """OpenCV's own pixel coordinates of ground-frame points seen by a camera at ``pose``."""
    R, t = optical_transform(pose)  # optical -> ground
    rvec, tvec = cv2.Rodrigues(R.T)[0], -R.T @ t
    project = cv2.fisheye.projectPoints if model == "equidistant" else cv2.projectPoints
    uv, _ = project(points.reshape(-1, 1, 3), rvec, tvec, np.asarray(K, float),
                    np.asarray(D, float))
    return uv.reshape(-1, 2)


def in_image(uv: np.ndarray) -> np.ndarray:
    return (uv[:, 0] >= 0) & (uv[:, 0] < WIDTH) & (uv[:, 1] >= 0) & (uv[:, 1] < HEIGHT)


def ground_points() -> np.ndarray:
    x, y = np.meshgrid(np.linspace(0.3, 40.0, 120), np.linspace(-20.0, 20.0, 121))
    return np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], -1)


@pytest.fixture(scope="module", params=list(LENSES))
def lens(request):
    """(distortion_model, K, D, the camera model at POSE from its CameraInfo)."""
    model = request.param
    K, D = LENSES[model]
    return model, K, D, camera_model_from_info(camera_info(model, K, D), POSE, rectified=False)


def test_ground_points_land_where_opencv_projects_them(lens):
    model, K, D, camera = lens
    points = ground_points()
    ours, in_view = camera.project(points)
    theirs = opencv_projection(model, K, D, points)
    seen = in_view & in_image(theirs)
    assert seen.sum() > 2000
    np.testing.assert_allclose(ours[seen], theirs[seen], atol=1e-4)


def test_grid_cells_take_the_pixel_opencv_projects_them_to(lens):
    model, K, D, camera = lens
    grid = GridSpec(0.25, 0.0, 40.0, -20.0, 20.0)
    projector = BevProjector(camera, grid)
    centres = grid.cell_centres().reshape(-1, 3)
    theirs = opencv_projection(model, K, D, centres)
    seen = ~projector._unseen.ravel()
    assert seen.sum() > 2000
    rows, cols = np.divmod(projector._index[seen], WIDTH)
    # the pixel that holds OpenCV's point (a tolerance at pixel borders, not bit equality)
    assert np.all(np.abs(theirs[seen] - np.column_stack([cols, rows]) - 0.5) <= 0.5 + 1e-6)
    # and every cell OpenCV puts in the image, away from the lens's field edge, is seen
    _, in_view = camera.project(centres)
    assert np.all(seen[in_image(theirs) & in_view])


def test_rays_through_opencvs_pixels_meet_the_ground_at_the_points(lens):
    """The inverse: 3D detections' contact points and the rays of the depth cloud."""
    model, K, D, camera = lens
    points = ground_points()
    theirs = opencv_projection(model, K, D, points)
    _, in_view = camera.project(points)
    seen = in_view & in_image(theirs)
    found = camera.intersect_ground(camera.pixel_rays(theirs[seen]))
    distance = np.linalg.norm(points[seen, :2] - camera.t_ground_optical[:2], axis=1)
    miss = np.linalg.norm(found[:, :2] - points[seen, :2], axis=1)
    has_ray = np.isfinite(miss)
    assert has_ray.mean() > 0.99  # OpenCV's inverse may stall in a corner where D flattens out
    relative = miss[has_ray] / distance[has_ray]
    assert np.all(relative < 1e-3), relative.max()
    # a detection standing on the ground: its box's bottom centre is the contact point
    near = np.flatnonzero(has_ray & (distance < 30))[::50]
    boxes = np.column_stack([theirs[seen][near] - [8.0, 30.0], theirs[seen][near] + [8.0, 0.0]])
    contacts = ground_positions(camera, boxes, rectified=False)
    assert contacts.valid.all()
    np.testing.assert_allclose(contacts.points[:, :2], points[seen][near, :2],
                               atol=1e-3 * distance[near].max())


def test_depth_points_project_back_onto_their_pixels(lens):
    """Hydra's depth cloud: each pixel's point (depth along the optical axis) projects,
    by OpenCV, back onto that pixel."""
    model, K, D, camera = lens
    projector = DepthProjector(camera, GridSpec())
    step = 16
    rays = camera.pixel_rays()[::step, ::step]
    depth = np.full((HEIGHT, WIDTH), 10.0, np.float32)  # any depth: the optical z of the point
    points = projector.points(depth, step)
    has_ray = np.isfinite(rays[..., 0])
    assert has_ray.mean() > (0.7 if model == "equidistant" else 0.99)
    theirs = opencv_projection(model, K, D, points[has_ray].astype(np.float64))
    v, u = np.mgrid[0:HEIGHT:step, 0:WIDTH:step]
    pixels = np.stack([u, v], -1)[has_ray]
    assert np.all(np.linalg.norm(theirs - pixels, axis=1) < 0.25)  # float32 rays
    # pixels no ray reaches (the fisheye's corners) give no point
    cloud = projector.cloud(depth, np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros(256, bool), step)
    assert len(cloud) == has_ray.sum() and np.isfinite(cloud["x"]).all()


def test_cells_beyond_the_lens_field_are_not_seen():
    """Barrel distortion r - 0.3 r^3 turns back at r = 1.05, beyond this image's corners
    (r_d = 0.67 there): ground far to the side projects by the polynomial back into the
    image. Those cells are not what the pixels see; they stay unseen."""
    K, D, pose = CameraModel.intrinsics(1100.0, 1100.0, 640.0, 360.0), [-0.3, 0, 0, 0, 0], \
        (0.0, 0.0, 1.5, 0.0, 0.0, 0.0)
    camera = camera_model_from_info(camera_info("plumb_bob", K, D), pose, rectified=False)
    grid = GridSpec(0.1, 0.0, 10.0, -10.0, 10.0)
    centres = grid.cell_centres().reshape(-1, 3)
    theirs = opencv_projection("plumb_bob", K, D, centres, pose)
    p_opt = (centres - camera.t_ground_optical) @ camera.R_ground_optical
    r = np.hypot(p_opt[:, 0], p_opt[:, 1]) / p_opt[:, 2]
    ghosts = in_image(theirs) & (p_opt[:, 2] > 0) & (r > 1 / np.sqrt(0.9) + 0.01)
    assert ghosts.sum() > 100
    unseen = BevProjector(camera, grid)._unseen.ravel()
    assert unseen[ghosts].all()
    assert not unseen[in_image(theirs) & (p_opt[:, 2] > 0) & (r < 1.0)].any()


@pytest.fixture(scope="module")
def processor(random_pipeline):
    return FrameProcessor(random_pipeline, NodeConfig())


@pytest.mark.parametrize("field, model, K, D, says", [
    ("d", "plumb_bob", PINHOLE_K, [1e6, 0, 0, 0, 0],
     "camera_info.d: the radial distortion puts the image's corner"),
    ("d", "plumb_bob", PINHOLE_K, [-1e6, 0, 0, 0, 0],
     "camera_info.d: the radial distortion folds the image at r = "),
    ("d", "rational_polynomial", PINHOLE_K, [-0.1, 0.01, 0, 0, 0, 0.2, 0.05, 0.01],
     "camera_info.d: the radial distortion folds the image at r = 1.1"),
    ("d", "equidistant", FISHEYE_K, [-2.0, 0, 0, 0],
     "camera_info.d: the radial distortion folds the image at theta = "),
    ("d", "plumb_bob", PINHOLE_K, [0, 0, 0.5, 0, 0],  # tangential: not a radial fold
     "camera_info.d: the distortion folds the image near pixel"),
    ("d", "equidistant", FISHEYE_K, [0.05, -0.01, 0.002, -0.0005, 0.0],
     "camera_info.d: 5 distortion coefficients: equidistant takes 4"),
    ("distortion_model", "double_sphere", FISHEYE_K, [0.5, 0.6],
     "camera_info.distortion_model: 'double_sphere' is not supported (plumb_bob, "
     "rational_polynomial, equidistant)"),
    ("distortion_model", "fisheye", FISHEYE_K, [0.05, -0.01, 0.002, -0.0005],
     "camera_info.distortion_model: 'fisheye' is not supported"),
    ("k", "plumb_bob", CameraModel.intrinsics(1e-300, 1e-300, 640.0, 360.0), [0.0] * 5,
     "camera_info.k: fx must be a positive finite focal length"),
    ("k", "plumb_bob", CameraModel.intrinsics(700.0, np.nan, 640.0, 360.0), [0.0] * 5,
     "camera_info.k: K must be finite"),
])
def test_a_calibration_no_lens_has_is_refused_naming_the_field(processor, field, model, K, D, says):
    for _ in range(2):  # a driver re-sends it: refused each time (counted once per message)
        problem = processor.set_camera_info(camera_info(model, K, D))
        assert problem is not None and problem.bad_input, field
        assert problem.reason is GridProblem.INVALID_CAMERA_INFO
        assert str(problem).startswith(says), str(problem)
        assert processor.camera_info_problem == str(problem)  # what /diagnostics shows
    assert processor.set_camera_info(camera_info("plumb_bob", PINHOLE_K, [0.0] * 5)) is None
    assert processor.camera_info_problem is None


def test_an_empty_distortion_model_is_plumb_bob(processor):
    """Simple drivers leave distortion_model empty: no distortion when D is empty or all
    zero, else D as plumb_bob (ROS's default, as camera_calibration_parsers assumes)."""
    for D in ([], [0.0] * 5):
        assert processor.set_camera_info(camera_info("", PINHOLE_K, D)) is None
        assert camera_model_from_info(camera_info("", PINHOLE_K, D), POSE, False).D is None
    D = LENSES["plumb_bob"][1]
    empty = camera_model_from_info(camera_info("", PINHOLE_K, D), POSE, False)
    plumb_bob = camera_model_from_info(camera_info("plumb_bob", PINHOLE_K, D), POSE, False)
    points = ground_points()
    np.testing.assert_array_equal(empty.project(points)[0], plumb_bob.project(points)[0])


def test_the_lens_model_survives_camera_info_round_trips(tmp_path):
    K, D = LENSES["equidistant"]
    camera = camera_model_from_info(camera_info("equidistant", K, D), POSE, False)
    info = camera_info_from_model(camera, "camera_optical_frame")
    assert info.distortion_model == "equidistant" and list(info.d) == D
    assert camera_info_of(info).distortion_model == "equidistant"  # replay's bag reader
    path = tmp_path / "fisheye.yaml"
    path.write_text(f"image_width: {WIDTH}\nimage_height: {HEIGHT}\ncamera_name: front\n"
                    f"camera_matrix: {{rows: 3, cols: 3, data: {np.ravel(K).tolist()}}}\n"
                    f"distortion_model: equidistant\n"
                    f"distortion_coefficients: {{rows: 1, cols: 4, data: {D}}}\n")
    from_yaml = camera_model_from_info(camera_info_from_yaml(path, "front"), POSE, False)
    np.testing.assert_allclose(from_yaml.project(ground_points())[0],
                               camera.project(ground_points())[0])


def _jittering(fx: float) -> CameraInfo:
    return camera_info("plumb_bob", CameraModel.intrinsics(fx, 690.0, 650.0, 350.0),
                       LENSES["plumb_bob"][1])


def test_a_camera_info_resent_every_frame_builds_the_lookup_once():
    cache, config = ProjectorCache(), NodeConfig()
    built = [cache.get(_jittering(700.0), (HEIGHT, WIDTH), config)[1] for _ in range(5)]
    assert [bool(cause) for cause in built] == [True, False, False, False, False]


def test_a_calibration_changing_every_frame_rebuilds_the_lookup_at_most_once_a_second():
    cache, config = ProjectorCache(), NodeConfig()
    causes = []
    for frame in range(25):  # 10 frames a second, fx jittering: values differ every frame
        fx = 700.0 + 0.01 * (frame % 3)
        projector, cause = cache.get(_jittering(fx), (HEIGHT, WIDTH), config, stamp=frame / 10)
        causes.append(cause)
        # the camera model (3D detections) follows every change; the lookup a recent one
        assert cache.camera(_jittering(fx), (HEIGHT, WIDTH), config).K[0, 0] == fx
        assert projector.camera.K[0, 0] in (700.0, 700.01, 700.02)
    assert [(i, c) for i, c in enumerate(causes) if c] == [(0, "first"), (10, "calibration"),
                                                          (20, "calibration")]
    # settings act at once
    grid = GridSpec(0.2, 0.0, 30.0, -10.0, 10.0)
    _, cause = cache.get(_jittering(700.0), (HEIGHT, WIDTH), config, grid=grid, stamp=2.55)
    assert cause == "settings"
    # stamps that do not advance (a driver that leaves them 0): every REBUILD_FRAMES frames
    causes = [cache.get(_jittering(700.0 + 0.01 * frame), (HEIGHT, WIDTH), config,
                        stamp=0.0)[1] for frame in range(2 * REBUILD_FRAMES)]
    assert [i for i, c in enumerate(causes) if c] == [0, REBUILD_FRAMES]
