"""hybridnets_node with its defaults (config/hybridnets.yaml).

    ros2 launch hybridnets_ros hybridnets.launch.py image:=/camera/image_raw \
        camera_info:=/camera/camera_info weights:=/path/to/hybridnets.pth backend:=auto

namespace:=front puts the node under /front (below any namespace an including launch file
pushes), and with it the relative topics: it reads /front/image and /front/camera_info and
publishes /front/detections, ...; an absolute image:= or camera_info:= stays as given.
use_compressed:=true subscribes to <image>/compressed instead. The node is a lifecycle node
(launch_ros LifecycleNode): under a lifecycle manager (Nav2's lifecycle_manager, launch's
lifecycle events) pass autostart:=false, and the manager drives configure and activate.

The node sets up Fast DDS for camera-sized messages itself (config/fastdds_node.xml: frames
in over UDP, so a camera driver with stock settings delivers them; outputs out through shared
memory), unless a profile or FASTDDS_BUILTIN_TRANSPORTS is set; nothing needs setting in the
driver's or viewers' shells (docs/dds.md).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration

from hybridnets_ros.ros.launch_args import declare_node_arguments, hybridnets_node


def generate_launch_description():
    image = LaunchConfiguration("image")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="", description="node namespace"),
        DeclareLaunchArgument("image", default_value="image", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info",
                              description="CameraInfo topic of the image"),
        *declare_node_arguments(),
        hybridnets_node(LaunchConfiguration("namespace"), [],
                        [("image", image), ("image/compressed", [image, "/compressed"]),
                         ("camera_info", LaunchConfiguration("camera_info"))]),
    ])
