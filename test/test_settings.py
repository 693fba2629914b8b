"""The configuration is one declared dataclass; the ROS parameters, the commands' options
and docs/parameters.md are made from it."""
import argparse
import dataclasses
import typing

import ros_graph  # noqa: F401  (isolated DDS domain)
import rclpy
from rcl_interfaces.msg import ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from conftest import REPO
from hybridnets_ros.cli.common import add_bag_options, add_model_options, config_from_options
from hybridnets_ros.core.registry import ADAPTERS, ModelSettings
from hybridnets_ros.pipeline import parameters_doc
from hybridnets_ros.pipeline.config import FIELD_TYPES, NodeConfig, settings
from hybridnets_ros.ros import params


def test_every_networks_settings_are_declared_fields_of_the_configuration():
    assert dataclasses.is_dataclass(NodeConfig) and NodeConfig.__module__.endswith("config")
    for adapter in ADAPTERS.values():
        if adapter.settings_type is not None:
            assert issubclass(ModelSettings, adapter.settings_type), adapter.name
            for f in adapter.settings:
                assert getattr(NodeConfig(), f.name) == f.default
    assert {f.name for f in settings()} == set(FIELD_TYPES)
    assert all(not isinstance(kind, str) for kind in FIELD_TYPES.values())  # resolved types
    assert FIELD_TYPES["cameras"] == tuple[str, ...]
    assert FIELD_TYPES["camera_resolution"] == tuple[int, ...]
    assert typing.get_type_hints(NodeConfig)["input_scale"] is float


def test_options_come_from_the_settings_once_each():
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    args = parser.parse_args(["--model", "hydra", "--input-scale", "0.5", "--conf", "0.4",
                              "--size", "320", "--random-weights", "--calib", "frames"])
    config = config_from_options(args)
    assert (config.model, config.input_scale, config.conf_threshold, config.input_size,
            config.allow_random_weights, config.int8_calibration) == (
        "hydra", 0.5, 0.4, 320, True, "frames")
    assert config_from_options(parser.parse_args([])) == NodeConfig()
    helps = {a.dest: a.help for a in parser._actions}
    described = {f.name: f.metadata["description"] for f in settings()}
    for name in ("weights", "backend", "device", "input_scale"):
        assert helps[name].startswith(described[name].replace("%", "%%"))
    bag = argparse.ArgumentParser()
    add_bag_options(bag)  # another command's set: the same options, its own defaults
    device = next(a for a in bag._actions if a.dest == "device")
    assert device.help.startswith(described["device"]) and "params file" in device.help


def test_parameters_doc_is_current():
    assert (REPO / "docs" / "parameters.md").read_text() == parameters_doc.markdown(), (
        "regenerate: python -m hybridnets_ros.pipeline.parameters_doc > docs/parameters.md")


def test_parameter_types_follow_the_field_types():
    ros_graph.init_rclpy()
    node = Node("settings_probe")
    try:
        params.declare_all(node)
        types = {name: node.describe_parameter(name).type for name in
                 ("cameras", "drivable_classes", "camera_resolution", "camera_poses")}
        assert types == {"cameras": ParameterType.PARAMETER_STRING_ARRAY,
                         "drivable_classes": ParameterType.PARAMETER_STRING_ARRAY,
                         "camera_resolution": ParameterType.PARAMETER_INTEGER_ARRAY,
                         "camera_poses": ParameterType.PARAMETER_DOUBLE_ARRAY}
        numbers = Parameter("drivable_classes", Parameter.Type.DOUBLE_ARRAY, [1.0])
        assert not node.set_parameters([numbers])[0].successful
        assert node.set_parameters([Parameter("drivable_classes", value=["road"])])[0].successful
        assert params.config_from_node(node).drivable_classes == ("road",)
        described = node.describe_parameter("conf_threshold")
        assert "within [0.0, 1.0]" in described.additional_constraints
    finally:
        node.destroy_node()
