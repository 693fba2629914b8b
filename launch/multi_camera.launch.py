"""Several cameras through one hybridnets_node and one model (docs/multi_camera.md).

    ros2 launch hybridnets_ros multi_camera.launch.py cameras:=front,left,right \
        camera_poses:="0,0,1.5,0,0.1,0, 0,0.5,1.5,0,0.1,1.5708, 0,-0.5,1.5,0,0.1,-1.5708"

Camera <name> reads /<name>/image_raw (or /<name>/image_raw/compressed with
use_compressed:=true) and /<name>/camera_info; its outputs are /hybridnets/<name>/...
(detections, masks, grids) and the fused surround grids /hybridnets/fused/drivable/grid
and /hybridnets/fused/lane/grid. camera_poses: 6 numbers per camera (x, y, z, roll, pitch,
yaw as camera_pose), or empty to take each camera's pose from TF (or from your config file).

one_process_per_camera:=true starts one namespaced node per camera instead (each its own
model and engine, outputs under /<name>/hybridnets/, no fused grids), as before.
weights, backend, use_sim_time, autostart and use_compressed apply to every node as in
hybridnets.launch.py; each node is a launch_ros LifecycleNode.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration

from hybridnets_ros.ros.launch_args import declare_node_arguments, hybridnets_node


def _camera_topics(name: str, prefix: str = "") -> list[tuple[str, str]]:
    """Remappings of camera <name>'s inputs (``prefix``: the node's name for them)."""
    return [(f"{prefix}image", f"/{name}/image_raw"),
            (f"{prefix}image/compressed", f"/{name}/image_raw/compressed"),
            (f"{prefix}camera_info", f"/{name}/camera_info")]


def _nodes(context):
    names = [n.strip() for n in LaunchConfiguration("cameras").perform(context).split(",") if n.strip()]
    if LaunchConfiguration("one_process_per_camera").perform(context).lower() == "true":
        return [hybridnets_node(f"{name}/hybridnets", [], _camera_topics(name)) for name in names]
    poses = LaunchConfiguration("camera_poses").perform(context).replace(",", " ").split()
    cameras = {"cameras": names}
    if poses:
        cameras["camera_poses"] = [float(v) for v in poses]
    return [hybridnets_node("hybridnets", [cameras],
                            [r for name in names for r in _camera_topics(name, f"{name}/")])]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("cameras", default_value="front,left,right",
                              description="comma-separated camera names"),
        DeclareLaunchArgument("camera_poses", default_value="",
                              description="6 numbers per camera (x y z roll pitch yaw), "
                              "comma- or space-separated; empty: TF or the config file"),
        DeclareLaunchArgument("one_process_per_camera", default_value="false",
                              description="true: one node (and model) per camera instead"),
        *declare_node_arguments(),
        OpaqueFunction(function=_nodes),
    ])
