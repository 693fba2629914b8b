"""hybridnets_node with its defaults (config/hybridnets.yaml).

    ros2 launch hybridnets_ros hybridnets.launch.py image:=/camera/image_raw \
        camera_info:=/camera/camera_info weights:=/path/to/hybridnets.pth backend:=auto

Under a lifecycle manager (Nav2's lifecycle_manager, launch_ros LifecycleNode events) pass
autostart:=false: the manager then drives configure and activate itself.

The node sets up Fast DDS for camera-sized messages itself (config/fastdds.xml, unless a
profile or FASTDDS_BUILTIN_TRANSPORTS is set); export FASTDDS_DEFAULT_PROFILES_FILE to that
file in the camera driver's and viewers' shells too (docs/dds.md).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
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
    return LaunchDescription([*args, node])
