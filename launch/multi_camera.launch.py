"""Several cameras through one hybridnets_node and one model (docs/multi_camera.md).

    ros2 launch hybridnets_ros multi_camera.launch.py cameras:=front,left,right \
        camera_poses:="0,0,1.5,0,0.1,0, 0,0.5,1.5,0,0.1,1.5708, 0,-0.5,1.5,0,0.1,-1.5708"

Camera <name> reads <namespace>/<name>/image_raw (or .../image_raw/compressed with
use_compressed:=true) and <namespace>/<name>/camera_info; its outputs are
<namespace>/hybridnets/<name>/... (detections, masks, grids) and the fused surround grids
<namespace>/hybridnets/fused/drivable/grid and .../fused/lane/grid. namespace:= (empty: the
root, so camera front reads /front/image_raw) is the robot's namespace, below any namespace
an including launch file pushes (PushROSNamespace); namespace:=robot1 gives
/robot1/front/image_raw and /robot1/hybridnets/front/detections. camera_poses: 6 numbers per
camera (x, y, z, roll, pitch, yaw as camera_pose), or empty to take each camera's pose from
TF (or from your config file).

one_process_per_camera:=true starts one node per camera instead (each its own model and
engine, outputs under <namespace>/<name>/hybridnets/, no fused grids), as before.
weights, backend, use_sim_time, autostart and use_compressed apply to every node as in
hybridnets.launch.py; each node is a launch_ros LifecycleNode.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

from hybridnets_ros.ros.launch_args import declare_node_arguments, hybridnets_node


def _robot_namespace(context) -> str:
    """namespace:= below the pushed ROS namespace, absolute ("" at the root)."""
    own = LaunchConfiguration("namespace").perform(context).strip() or None
    pushed = context.launch_configurations.get("ros_namespace")
    return (make_namespace_absolute(prefix_namespace(pushed, own)) or "").rstrip("/")


def _camera_topics(robot: str, name: str, prefix: str = "") -> list[tuple[str, str]]:
    """Remappings of camera <name>'s inputs (``prefix``: the node's name for them). Resolved
    here: rcl would resolve a relative target in the node's own namespace
    (<robot>/hybridnets), not in the robot's."""
    return [(f"{prefix}image", f"{robot}/{name}/image_raw"),
            (f"{prefix}image/compressed", f"{robot}/{name}/image_raw/compressed"),
            (f"{prefix}camera_info", f"{robot}/{name}/camera_info")]


def _nodes(context):
    robot = _robot_namespace(context)
    listed = LaunchConfiguration("cameras").perform(context).split(",")
    names = [n.strip() for n in listed if n.strip()]
    if LaunchConfiguration("one_process_per_camera").perform(context).lower() == "true":
        return [hybridnets_node(f"{robot}/{name}/hybridnets", [], _camera_topics(robot, name))
                for name in names]
    poses = LaunchConfiguration("camera_poses").perform(context).replace(",", " ").split()
    cameras = {"cameras": names}
    if poses:
        cameras["camera_poses"] = [float(v) for v in poses]
    return [hybridnets_node(f"{robot}/hybridnets", [cameras],
                            [r for name in names for r in _camera_topics(robot, name, f"{name}/")])]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="",
                              description="the robot's namespace: cameras and nodes under it"),
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
