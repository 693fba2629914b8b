"""What both launch files (launch/*.launch.py) share: the launch arguments that become node
parameters, declared once, and the node action itself.

Each argument becomes the node parameter of the same name except ``config``, the parameter
file. The node is a launch_ros ``LifecycleNode``, so that launch's lifecycle events (and
Nav2's lifecycle_manager, with ``autostart:=false``) can drive it. Imported by the launch
files only: launch and launch_ros come with ROS (rosdep), or into the project's venv from
../shared/ros_tools (`make test`), as they are not on the package index.
"""
from __future__ import annotations

PACKAGE = "hybridnets_ros"
EXECUTABLE = "hybridnets_node"

# name -> (default, description); "config"'s default is the installed config/hybridnets.yaml
NODE_ARGUMENTS = {
    "weights": ("", "checkpoint; empty: the downloaded one"),
    "backend": ("auto", "auto | torch | onnxruntime | openvino | tensorrt | torch2trt"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "autostart": ("true", "configure and activate by itself; false under a lifecycle manager"),
    "use_compressed": ("false", "subscribe to <image>/compressed (jpeg/png) instead of <image>"),
}


def declare_node_arguments() -> list:
    """DeclareLaunchArgument actions for ``config`` and NODE_ARGUMENTS."""
    from launch.actions import DeclareLaunchArgument
    from launch.substitutions import PathJoinSubstitution
    from launch_ros.substitutions import FindPackageShare

    config = DeclareLaunchArgument("config", default_value=PathJoinSubstitution(
        [FindPackageShare(PACKAGE), "config", "hybridnets.yaml"]),
        description="parameter file")
    return [config] + [DeclareLaunchArgument(name, default_value=default, description=text)
                       for name, (default, text) in NODE_ARGUMENTS.items()]


def node_parameters() -> dict:
    """The NODE_ARGUMENTS as parameter overrides of the node."""
    from launch.substitutions import LaunchConfiguration
    return {name: LaunchConfiguration(name) for name in NODE_ARGUMENTS}


def hybridnets_node(namespace, parameters: list, remappings: list):
    """hybridnets_node as a LifecycleNode: the ``config`` file, then ``parameters`` (after
    the NODE_ARGUMENTS overrides, so that they win)."""
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode

    return LifecycleNode(package=PACKAGE, executable=EXECUTABLE, name=EXECUTABLE,
                         namespace=namespace, output="screen", emulate_tty=True,
                         parameters=[LaunchConfiguration("config"), node_parameters(), *parameters],
                         remappings=remappings)
