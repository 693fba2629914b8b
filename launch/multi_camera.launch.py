"""Several cameras: one namespaced hybridnets_node per camera, sharing the defaults.

    ros2 launch hybridnets_ros multi_camera.launch.py cameras:=front,rear

Camera <name> reads /<name>/image_raw and /<name>/camera_info and publishes under
/<name>/hybridnets/. Give each its camera_pose in a parameter file of your own (the
defaults assume a forward camera 1.5 m above base_link).
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def _nodes(context):
    config = LaunchConfiguration("config").perform(context)
    names = [n.strip() for n in LaunchConfiguration("cameras").perform(context).split(",") if n.strip()]
    return [Node(package="hybridnets_ros", executable="hybridnets_node", name="hybridnets_node",
                 namespace=f"{name}/hybridnets", output="screen", parameters=[config],
                 remappings=[("image", f"/{name}/image_raw"),
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
        OpaqueFunction(function=_nodes),
    ])
