"""The launch arguments both launch files take (launch/*.launch.py), declared once.

Each becomes the node parameter of the same name except ``config``, the parameter file.
Imported by the launch files only, in a ROS workspace (launch and launch_ros are not
installable from the package index).
"""
from __future__ import annotations

# name -> (default, description); "config"'s default is the installed config/hybridnets.yaml
NODE_ARGUMENTS = {
    "weights": ("", "checkpoint; empty: the downloaded one"),
    "backend": ("auto", "auto | torch | onnxruntime | openvino | tensorrt | torch2trt"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "autostart": ("true", "configure and activate by itself; false under a lifecycle manager"),
}


def declare_node_arguments() -> list:
    """DeclareLaunchArgument actions for ``config`` and NODE_ARGUMENTS."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    config = DeclareLaunchArgument("config", default_value=PathJoinSubstitution(
        [FindPackageShare("hybridnets_ros"), "config", "hybridnets.yaml"]),
        description="parameter file")
    return [config] + [DeclareLaunchArgument(name, default_value=default, description=text)
                       for name, (default, text) in NODE_ARGUMENTS.items()]


def node_parameters() -> dict:
    """The NODE_ARGUMENTS as parameter overrides of the node."""
    from launch.substitutions import LaunchConfiguration
    return {name: LaunchConfiguration(name) for name in NODE_ARGUMENTS}
