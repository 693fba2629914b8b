"""Several cameras: one namespaced hybridnets_node per camera, sharing the defaults.

    ros2 launch hybridnets_ros multi_camera.launch.py cameras:=front,rear

Camera <name> reads /<name>/image_raw (or /<name>/image_raw/compressed with
use_compressed:=true) and /<name>/camera_info and publishes under /<name>/hybridnets/.
Give each its camera_pose in a parameter file of your own (the defaults assume a forward
camera 1.5 m above base_link). weights, backend, use_sim_time and autostart apply to every
camera's node as in hybridnets.launch.py.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Launch arguments passed to every node as parameters of the same name.
PASSED_PARAMETERS = ("weights", "backend", "use_sim_time", "autostart", "use_compressed")


def _nodes(context):
    config = LaunchConfiguration("config").perform(context)
    names = [n.strip() for n in LaunchConfiguration("cameras").perform(context).split(",") if n.strip()]
    overrides = {name: LaunchConfiguration(name) for name in PASSED_PARAMETERS}
    return [Node(package="hybridnets_ros", executable="hybridnets_node", name="hybridnets_node",
                 namespace=f"{name}/hybridnets", output="screen", parameters=[config, overrides],
                 remappings=[("image", f"/{name}/image_raw"),
                             ("image/compressed", f"/{name}/image_raw/compressed"),
                             ("camera_info", f"/{name}/camera_info")])
            for name in names]


def generate_launch_description():
    return LaunchDescription([
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")),
        DeclareLaunchArgument("cameras", default_value="front,rear",
                              description="comma-separated camera names"),
        DeclareLaunchArgument("config", default_value=PathJoinSubstitution(
            [FindPackageShare("hybridnets_ros"), "config", "hybridnets.yaml"])),
        DeclareLaunchArgument("weights", default_value="",
                              description="checkpoint; empty: the downloaded one"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto | torch | onnxruntime | tensorrt | torch2trt"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate by itself; false under a "
                              "lifecycle manager"),
        DeclareLaunchArgument("use_compressed", default_value="false",
                              description="subscribe to <camera>/image_raw/compressed"),
        OpaqueFunction(function=_nodes),
    ])
