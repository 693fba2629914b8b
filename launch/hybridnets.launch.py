"""hybridnets_node with its defaults (config/hybridnets.yaml).

    ros2 launch hybridnets_ros hybridnets.launch.py image:=/camera/image_raw \
        camera_info:=/camera/camera_info weights:=/path/to/hybridnets.pth backend:=auto

Under a lifecycle manager (Nav2's lifecycle_manager, launch_ros LifecycleNode events) pass
autostart:=false: the manager then drives configure and activate itself.

Sets FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA for the node (unless already set): Fast DDS'
default transports lose most large best-effort images between processes. The camera
driver and any viewer must use the same setting: export it in their shells too.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from hybridnets_ros.ros.launch_args import declare_node_arguments, node_parameters


def generate_launch_description():
    args = [
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("image", default_value="image", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="CameraInfo topic of the image"),
        *declare_node_arguments(),
    ]
    node = Node(
        package="hybridnets_ros",
        executable="hybridnets_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("config"), node_parameters()],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
                    ("camera_info", LaunchConfiguration("camera_info"))],
    )
    transport = os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    return LaunchDescription([SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", transport),
                              *args, node])
