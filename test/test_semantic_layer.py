"""What Nav2's semantic segmentation layer reads, without DDS: segmentation/confidence from
each network's own scores, segmentation/points against the camera model (on the road plane,
back in its own pixel; with depth, along the ray at the depth) and the output scale keeping
label, confidence and cloud aligned. The DDS contract: test_node; replay: test_bags."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from std_msgs.msg import Header

from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.postprocess import max_softmax
from hybridnets_ros.core.registry import ADAPTERS
from hybridnets_ros.core.semantic_cloud import GroundPoints, Sampler, output_hw
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.config import ConfigError, NodeConfig
from hybridnets_ros.pipeline.factory import build_pipeline
from hybridnets_ros.ros import messages
from hybridnets_ros.ros.camera_info import camera_info_from_model
from hybridnets_ros.ros.frame import FrameProcessor
from conftest import REPO

# A small wide-angle camera with barrel distortion, pitched down and rolled a little.
K = CameraModel.intrinsics(150.0, 152.0, 161.0, 88.0)
D = np.array([-0.25, 0.06, 0.001, -0.0015, 0.0])
POSE = (0.4, -0.2, 1.4, 0.03, 0.12, 0.05)
CAMERA = CameraModel.from_pose(K, 320, 180, POSE, D=D)
MAX_RANGE = 30.0


def reprojected(camera: CameraModel, points: np.ndarray) -> np.ndarray:
    """Image coordinates [N, 2] of ground-frame points by OpenCV's own projectPoints."""
    R, t = camera.R_ground_optical, camera.t_ground_optical
    rvec, _ = cv2.Rodrigues(R.T)  # optical <- ground
    uv, _ = cv2.projectPoints(points.astype(np.float64), rvec, -R.T @ t, camera.K,
                              np.zeros(5) if camera.D is None else camera.D)
    return uv.reshape(-1, 2)


def output_coordinates(uv: np.ndarray, camera: CameraModel, out_hw) -> np.ndarray:
    """Image coordinates -> the output image's (pixel centres at whole numbers)."""
    scale = np.array([out_hw[1] / camera.width, out_hw[0] / camera.height])
    return (uv + 0.5) * scale - 0.5


@pytest.mark.parametrize("scale", [1.0, 0.3125])
def test_ground_points_lie_on_the_plane_and_reproject_into_their_own_pixel(scale):
    lookup = GroundPoints(CAMERA, scale, MAX_RANGE)
    points = lookup.on_ground()
    h, w = output_hw((CAMERA.height, CAMERA.width), scale)
    assert points.shape == (h, w, 3) and points.dtype == np.float32
    finite = np.isfinite(points).all(-1)
    assert np.array_equal(finite, np.isfinite(points).any(-1))  # a point is whole or NaN
    # the camera looks down: the bottom rows see the ground, the top ones the sky
    assert finite[-1].all() and not finite[0].any() and finite.mean() > 0.3
    assert np.abs(points[finite][:, 2]).max() < 1e-4
    horizontal = np.hypot(*(points[finite][:, :2] - CAMERA.t_ground_optical[:2]).T)
    assert horizontal.max() <= MAX_RANGE + 1e-3
    v, u = np.nonzero(finite)
    uv = output_coordinates(reprojected(CAMERA, points[finite]), CAMERA, (h, w))
    assert np.abs(uv - np.column_stack([u, v])).max() < 0.5


def test_points_beyond_max_range_or_above_the_horizon_are_nan():
    lookup = GroundPoints(CAMERA, 1.0, MAX_RANGE)
    rays = CAMERA.pixel_rays()
    ground = CAMERA.intersect_ground(rays)
    reach = np.hypot(*(ground[..., :2] - CAMERA.t_ground_optical[:2]).transpose(2, 0, 1))
    expected = (rays[..., 2] < 0) & (reach <= MAX_RANGE * 0.999)
    finite = np.isfinite(lookup.on_ground()[..., 0])
    assert np.array_equal(finite[expected], np.ones(expected.sum(), bool))
    assert not finite[(rays[..., 2] >= 0) | (reach > MAX_RANGE * 1.001)].any()


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_depth_points_lie_along_their_ray_at_the_pixels_depth(scale):
    lookup = GroundPoints(CAMERA, scale, MAX_RANGE)
    rng = np.random.default_rng(1)
    depth = rng.uniform(1.0, 20.0, (CAMERA.height, CAMERA.width)).astype(np.float32)
    depth[:5] = np.nan  # invalid depths and a class without a surface give no point
    classes = np.zeros(depth.shape, np.uint8)
    classes[:, :7] = 3
    skip = np.zeros(256, bool)
    skip[3] = True
    points = lookup.at_depth(depth, classes, skip)
    sampled = lookup.sampler.sample(depth)
    finite = np.isfinite(points).all(-1)
    assert not finite[lookup.sampler.sample(classes) == 3].any()
    assert not finite[~np.isfinite(sampled)].any()
    assert finite.mean() > 0.8
    # REP-118: the depth is along the optical axis
    optical = (points[finite] - CAMERA.t_ground_optical) @ CAMERA.R_ground_optical
    np.testing.assert_allclose(optical[:, 2], sampled[finite], rtol=1e-5)
    v, u = np.nonzero(finite)
    uv = output_coordinates(reprojected(CAMERA, points[finite]), CAMERA, lookup.out_hw)
    assert np.abs(uv - np.column_stack([u, v])).max() < 0.5


def test_scaled_label_samples_the_pixel_under_each_output_centre():
    sampler = Sampler((180, 320), 0.3125)
    assert sampler.out_hw == (56, 100)
    rows, cols = np.mgrid[:180, :320]
    label = (rows * 1000 + cols).astype(np.int32)  # each pixel names itself
    sampled = sampler.sample(label)
    centres = output_coordinates(np.stack([sampled % 1000, sampled // 1000], -1), CAMERA,
                                 sampler.out_hw)
    v, u = np.mgrid[:56, :100]
    assert np.abs(centres - np.stack([u, v], -1)).max() <= 0.5 * 320 / 100
    assert Sampler((180, 320), 1.0).sample(label) is label


def test_max_softmax_is_the_probability_of_the_argmax():
    logits = np.random.default_rng(0).normal(0, 3, (5, 40, 60)).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(logits), 0).amax(0).numpy() * 255
    # within rounding and OpenCV's float32 exp
    assert np.abs(max_softmax(logits).astype(np.float64) - expected).max() <= 1.0


@pytest.mark.parametrize("value", [0.0, -0.5, 1.5, float("nan")])
def test_output_scale_is_validated(value):
    with pytest.raises(ConfigError, match="semantic_output_scale"):
        NodeConfig.from_mapping({"semantic_output_scale": value})


@pytest.fixture(scope="module")
def frame():
    camera = default_camera(320, 192)
    bgr = SyntheticRoad(camera).render(0.0)[0]
    return camera, messages.image(Header(frame_id="camera_optical_frame"), bgr, "bgr8")


@pytest.mark.parametrize("model", tuple(ADAPTERS))
def test_every_network_gives_label_confidence_and_points_aligned(model, frame, request):
    camera, msg = frame
    network = ADAPTERS[model]
    config = NodeConfig.from_mapping({"model": model, "backend": "torch",
                                      "allow_random_weights": True, "camera_resolution": [],
                                      "semantic_output_scale": 0.25})
    # HybridNets: the session's pipeline (its engine for this input size is shared); the
    # others in eager torch: no engine to build for one frame
    pipeline = (request.getfixturevalue("random_pipeline") if model == "hybridnets"
                else build_pipeline(config, optimize=False))
    processor = FrameProcessor(pipeline, config)
    processor.set_camera_info(camera_info_from_model(camera, "camera_optical_frame"))
    wanted = ("segmentation_label", "segmentation_confidence", "segmentation_points")
    outcome = processor.process(msg, wanted)
    label, confidence, cloud = (outcome.messages[name] for name in wanted)
    assert (label.width, label.height) == (confidence.width, confidence.height) == \
        (cloud.width, cloud.height) == (80, 48)
    assert label.encoding == confidence.encoding == "mono8"
    result = outcome.result
    assert result.confidence.shape == result.seg_mask.shape
    scores = np.frombuffer(confidence.data, np.uint8)
    # a softmax's highest probability is at least 1/classes; YOLOP's chosen sigmoid channel
    # is above the other one of its head, which says nothing of its own value
    if model != "yolop":
        assert scores.min() >= int(255 / len(network.seg_classes))
    if len(np.unique(result.seg_mask)) > 1:  # random weights may give one class everywhere
        assert scores.max() > scores.min()  # the network's scores, not a constant
    # not asked for: not computed
    assert processor.process(msg, ("segmentation_label",)).result.confidence is None


def test_the_layer_config_names_our_topics_and_each_networks_classes():
    import re

    import yaml

    from hybridnets_ros.core.registry import adapter
    from hybridnets_ros.ros.outputs import OUTPUTS

    text = (REPO / "config" / "nav2_semantic_layer.yaml").read_text()
    layer = yaml.safe_load(text)["local_costmap"]["local_costmap"]["ros__parameters"][
        "semantic_segmentation_layer"]
    camera = layer[layer["observation_sources"]]
    topics = {"/" + o.topic for o in OUTPUTS}
    for key in ("segmentation_topic", "confidence_topic", "labels_topic", "pointcloud_topic"):
        assert camera[key] in topics, camera[key]
    listed = [c for t in camera["class_types"] for c in camera[t]["classes"]]
    assert sorted(listed) == sorted(adapter("hybridnets").seg_classes)
    assert set(adapter("yolop").seg_classes) == set(adapter("hybridnets").seg_classes)
    # the commented blocks: every class of HyCTAS and Hydra but the sky, each once
    for model in ("hyctas", "hydra"):
        block = text.split(f"(model: {model})")[1].split("# ----")[0]
        uncommented = "\n".join(line.lstrip("# ") for line in block.splitlines())
        names = [n for listing in re.findall(r"classes: \[([^\]]*)\]", uncommented)
                 for n in re.findall(r'"([^"]+)"', listing)]
        assert sorted(names) == sorted(set(adapter(model).seg_classes) - {"sky"}), model
