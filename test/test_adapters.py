"""The model-adapter interface: every backend is built from one BackendSpec, the Result's
masks, the grids from (overlapping) masks, the npz arrays (the rule that only the model
folders and the registry name a network: test_layers.py)."""
from __future__ import annotations

import inspect

import numpy as np
import pytest

from hybridnets_ros.backends.base import BackendSpec
from hybridnets_ros.backends.registry import BACKENDS, backend_class
from hybridnets_ros.core.adapter import DetectionSettings, ModelAdapter
from hybridnets_ros.core.bev import BevProjector, GridSpec
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.registry import ADAPTERS, adapter
from hybridnets_ros.core.synthetic import default_camera
from hybridnets_ros.pipeline.config import NodeConfig


@pytest.fixture(scope="module")
def synthetic_frame():
    from hybridnets_ros.core.synthetic import SyntheticRoad
    return SyntheticRoad(default_camera()).render(0.0)[0]


def test_every_backend_takes_one_spec():
    for name in BACKENDS:
        try:
            cls = backend_class(name)
        except ImportError:  # the module imports its library lazily; this should not happen
            pytest.fail(f"{name} backend module does not import")
        parameters = list(inspect.signature(cls.__init__).parameters)
        assert parameters == ["self", "spec"], f"{name}: {parameters}"


def test_adapters_declare_what_the_rest_reads():
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        adapter("nope")
    for registered in ADAPTERS.values():
        assert isinstance(registered, ModelAdapter)
        assert registered.output_names and registered.seg_classes
        assert len(registered.seg_colors_rgb) == len(registered.seg_classes), registered.name
        assert "semantic" in registered.products
        for setting in registered.settings:  # each becomes a setting with its default
            assert getattr(NodeConfig(), setting.name) == setting.default
        packed = registered.pack(range(len(registered.output_names)))
        assert packed._fields == registered.output_names


@pytest.mark.slow  # a whole frame through the network
def test_hybridnets_result_has_its_masks(random_pipeline, synthetic_frame):
    result = random_pipeline(synthetic_frame, DetectionSettings(0.5, 0.3, 10))
    assert result.drivable_mask.dtype == bool and result.lane_mask.dtype == bool
    np.testing.assert_array_equal(result.drivable_mask, result.seg_mask == 1)
    np.testing.assert_array_equal(result.lane_mask, result.seg_mask == 2)
    assert len(result.detections) <= 10


def test_grids_from_overlapping_masks_count_lanes_as_drivable():
    camera = default_camera()
    model = CameraModel.from_pose(camera.K, 1280, 720, (0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    projector = BevProjector(model, GridSpec())
    drivable = np.zeros((720, 1280), bool)
    drivable[450:, 200:1100] = True
    lane = np.zeros((720, 1280), bool)
    lane[450:, 630:660] = True   # on the road: both masks
    lane[450:, 100:130] = True   # beside it: lane only
    classes = drivable.astype(np.uint8)
    classes[lane] = 2
    masks_drivable, masks_lane = (g.copy() for g in projector.project_masks(drivable, lane))
    class_drivable, class_lane = projector.project(classes)
    np.testing.assert_array_equal(masks_drivable, class_drivable)
    np.testing.assert_array_equal(masks_lane, class_lane)
    assert (masks_lane == 100).any() and (masks_drivable == 0).any()


@pytest.mark.slow  # infer on images of every network with masks
def test_save_npz_writes_the_masks_where_the_network_has_them(tmp_path, random_pipeline,
                                                              synthetic_frame):
    from hybridnets_ros.cli.infer import save_npz

    result = random_pipeline(synthetic_frame)
    save_npz(tmp_path / "a.npz", result)
    with np.load(tmp_path / "a.npz") as data:
        for name in ("drivable_mask", "lane_mask"):
            assert data[name].dtype == np.uint8 and data[name].shape == (720, 1280)
            np.testing.assert_array_equal(data[name], getattr(result, name))
    result.drivable_mask = result.lane_mask = None  # a network without them
    save_npz(tmp_path / "b.npz", result)
    with np.load(tmp_path / "b.npz") as data:
        assert "drivable_mask" not in data and "lane_mask" not in data
