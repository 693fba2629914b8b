"""The typed node configuration: one table of settings, validated in one place."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hybridnets_ros.pipeline.config import ConfigError, NodeConfig, settings

REPO = Path(__file__).resolve().parents[1]


def test_defaults_equal_the_shipped_params_file():
    shipped = yaml.safe_load((REPO / "config" / "hybridnets.yaml").read_text())["/**"]["ros__parameters"]
    assert set(shipped) == {f.name for f in settings()}
    defaults = NodeConfig()
    for name, value in shipped.items():
        expected = tuple(value) if isinstance(value, list) else value
        assert getattr(defaults, name) == expected, name
    assert NodeConfig.from_params_file(REPO / "config" / "hybridnets.yaml") == defaults


@pytest.mark.parametrize("bad", [dict(grid_resolution=0.0), dict(grid_x_range=[5.0, 5.0]),
                                 dict(grid_y_range=[1.0, -1.0]), dict(grid_resolution=1e-4),
                                 dict(grid_y_range=[5.0]), dict(grid_x_range=[-1e308, 1e308]),
                                 dict(grid_x_range=[0.0, float("nan")])])
def test_bad_grids_are_refused(bad):
    with pytest.raises(ConfigError, match="grid"):
        NodeConfig().with_changes(**bad)


def test_a_grid_too_large_is_refused_with_its_size():
    with pytest.raises(ConfigError, match="cells") as info:
        NodeConfig().with_changes(grid_resolution=0.01, grid_x_range=[0.0, 200.0])
    assert "grid_x_range" in str(info.value)


@pytest.mark.parametrize("bad, words", [
    (dict(conf_threshold=-1.0), "conf_threshold"), (dict(iou_threshold=1.5), "iou_threshold"),
    (dict(input_size=100), "input_size"), (dict(input_size=650), "multiple of 32"),
    (dict(diagnostics_period=0.0), "diagnostics_period"),
    (dict(camera_pose=[0.0, 0.0, 1.5]), "camera_pose"),
    (dict(camera_pose=[0.0, 0.0, float("nan"), 0.0, 0.0, 0.0]), "camera_pose"),
    (dict(camera_resolution=[1280]), "camera_resolution"),
    (dict(backend="bogus"), "backend"), (dict(precision="fp8"), "precision"),
    (dict(device="bogus"), "device"), (dict(ground_frame=" "), "ground_frame"),
    (dict(conf_threshold="high"), "conf_threshold must be a float"),
    (dict(autostart=1), "autostart must be a bool"),
    (dict(no_such_setting=1), "unknown setting"), (dict(grid=1), "unknown setting"),
])
def test_bad_values_are_refused_naming_the_setting(bad, words):
    with pytest.raises(ConfigError, match=words):
        NodeConfig().with_changes(**bad)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        NodeConfig().with_changes(conf_threshold=2.0, backend="bogus")
    assert "conf_threshold" in str(info.value) and "backend" in str(info.value)


def test_values_are_coerced_to_the_setting_type():
    config = NodeConfig().with_changes(conf_threshold=1, grid_x_range=[0, 20],
                                       camera_resolution=[640.0, 480.0], camera_pose=[])
    assert config.conf_threshold == 1.0 and isinstance(config.conf_threshold, float)
    assert config.grid_x_range == (0.0, 20.0)
    assert config.camera_resolution == (640, 480) and config.source_hw == (480, 640)
    assert config.camera_pose == ()
    assert config.grid.width == 200


def test_params_file_values_and_errors(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("/my_ns/hybridnets_node:\n  ros__parameters:\n    conf_threshold: 0.5\n"
                    "    grid_x_range: [0, 20]\n    other_nodes_param: 3\n"
                    "other_node:\n  ros__parameters:\n    conf_threshold: 0.9\n")
    config = NodeConfig.from_params_file(good)
    assert config.conf_threshold == 0.5 and config.grid_x_range == (0.0, 20.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    grid_resolution: 0.0\n")
    with pytest.raises(ConfigError, match=f"{bad}.*grid_resolution"):
        NodeConfig.from_params_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.from_params_file(tmp_path / "missing.yaml")
