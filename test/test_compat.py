"""What other ROS tools read: the Nav2 costmap snippet, the outputs' QoS, the label and
colour images and the class map, bags for every rosbag2 distro, the RViz layout, rosdep keys."""
import xml.etree.ElementTree as ET

import numpy as np
import yaml
from rclpy.qos import QoSDurabilityPolicy, QoSReliabilityPolicy
from std_msgs.msg import Header

from conftest import REPO, check_humble_metadata
from hybridnets_ros.core.bev import BevProjector, GridSpec
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.postprocess import Detections
from hybridnets_ros.core.models.hybridnets.spec import BDD100K
from hybridnets_ros.core.synthetic import default_camera
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.pipeline.pipeline import Result
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.core.surfaces import MaskSurfaces
from hybridnets_ros.ros.outputs import BY_NAME, FrameProducts, ModelProducts, enabled_outputs, model_outputs
from hybridnets_ros.tools.bags import BagReader, BagWriter


def costmaps():
    return yaml.safe_load((REPO / "config" / "nav2_costmap.yaml").read_text())


def costmap(name="local_costmap"):
    return costmaps()[name][name]["ros__parameters"]


def layers_of(params, plugin):
    return [params[name] for name in params["plugins"]
            if name in params and params[name]["plugin"] == f"nav2_costmap_2d::{plugin}"]


# What nav2_costmap_2d's StaticLayer reads from its own namespace (plugins/static_layer.cpp,
# StaticLayer::getParameters; Humble and Jazzy alike): track_unknown_space,
# lethal_cost_threshold, unknown_cost_value, trinary_costmap and transform_tolerance it
# reads from the costmap's parameters instead, so under the layer they would be ignored.
STATIC_LAYER_KEYS = {"plugin", "enabled", "subscribe_to_updates", "map_subscribe_transient_local",
                     "map_topic", "footprint_clearing_enabled"}


def test_nav2_local_costmap_holds_the_whole_grid_and_clears():
    params, grid = costmap(), NodeConfig().grid
    assert params["rolling_window"] is True  # the static layer transforms only when rolling
    assert params["track_unknown_space"] is True  # -1 cells must not become free
    assert params["resolution"] == grid.resolution
    # the robot-centred window holds the grid's farthest cell in any heading
    reach = max(np.hypot(x, y) for x in (grid.x_min, grid.x_max) for y in (grid.y_min, grid.y_max))
    assert min(params["width"], params["height"]) / 2 >= reach
    (static,) = layers_of(params, "StaticLayer")
    assert set(static) <= STATIC_LAYER_KEYS, set(static) - STATIC_LAYER_KEYS
    assert static["map_topic"].lstrip("/") == BY_NAME["drivable_grid"].topic
    assert static["map_subscribe_transient_local"] is True
    assert BY_NAME["drivable_grid"].qos.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL


def test_nav2_global_costmap_has_no_static_layer_on_the_grid():
    params = costmap("global_costmap")
    assert not layers_of(params, "StaticLayer")  # it would take the grid for the map
    assert layers_of(params, "ObstacleLayer")


def test_nav2_obstacle_sources_admit_the_points_and_clear_over_the_grid():
    z, grid = NodeConfig().points_z, NodeConfig().grid
    reach = max(np.hypot(x, y) for x in (grid.x_min, grid.x_max) for y in (grid.y_min, grid.y_max))
    for name in ("local_costmap", "global_costmap"):
        (obstacle,) = layers_of(costmap(name), "ObstacleLayer")
        sources = obstacle["observation_sources"].split()
        assert sources
        for source in sources + [s for s in ("lane_lines",) if s in obstacle]:
            s = obstacle[source]
            assert s["topic"].lstrip("/") in {BY_NAME["drivable_points"].topic,
                                              BY_NAME["lane_points"].topic}
            assert s["min_obstacle_height"] < z < min(s["max_obstacle_height"],
                                                      obstacle["max_obstacle_height"])
            assert s["marking"] is True and s["clearing"] is True, (name, source)
            # ranges are measured from the cloud's origin, under the robot (defaults 2.5, 3.0)
            assert s["obstacle_max_range"] >= reach and s["raytrace_max_range"] >= reach


def test_grids_are_latched_for_transient_local_subscribers():
    for name in ("drivable_grid", "lane_grid", "vision_info", "label_info"):
        qos = BY_NAME[name].qos
        assert qos.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL, name
        assert qos.reliability == QoSReliabilityPolicy.RELIABLE and qos.depth == 1


def _products(seg_mask, config=NodeConfig(points_z=0.7)):
    camera = default_camera()
    projector = BevProjector(CameraModel.from_pose(camera.K, 1280, 720, config.camera_pose),
                             GridSpec())
    result = Result(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                               np.zeros(0, np.int64)), seg_mask, drivable_mask=seg_mask == 1,
                    lane_mask=seg_mask == 2)
    products = FrameProducts(Header(frame_id="cam"), np.zeros((720, 1280, 3), np.uint8), result,
                             adapter("hybridnets"), MaskSurfaces(), "base_link", config.points_z,
                             projector)
    products.grids = projector.project(seg_mask)
    return products


def test_points_at_points_z_label_and_colour_images():
    seg = np.zeros((720, 1280), np.uint8)
    seg[500:, 300:1000] = 1   # road ahead
    seg[500:, 640:650] = 2    # a lane line on it
    p = _products(seg)
    for name in ("drivable_points", "lane_points"):
        cloud = BY_NAME[name].build(p)
        xyz = np.frombuffer(cloud.data, np.float32).reshape(-1, 3)
        assert len(xyz) > 0 and np.all(xyz[:, 2] == np.float32(0.7)), name
    label = BY_NAME["segmentation_label"].build(p)
    assert (label.encoding, label.width, label.height) == ("mono8", 1280, 720)
    np.testing.assert_array_equal(np.frombuffer(label.data, np.uint8).reshape(720, 1280), seg)
    colour = BY_NAME["segmentation_color"].build(p)
    assert (colour.encoding, colour.step) == ("rgb8", 1280 * 3)
    rgb = np.frombuffer(colour.data, np.uint8).reshape(720, 1280, 3)
    palette = np.asarray(adapter("hybridnets").seg_colors_rgb, np.uint8)
    assert len({tuple(c) for c in palette}) == 3  # one colour per class
    for cls in range(3):
        assert np.all(rgb[seg == cls] == palette[cls])
    assert {"segmentation_label", "segmentation_color"} <= enabled_outputs(NodeConfig())
    assert "vision_info" not in enabled_outputs(NodeConfig())  # latched, not per frame


def test_vision_info_names_the_classes():
    info = model_outputs(ModelProducts(Header(), "HybridNets (BDD100K)", BDD100K.class_names,
                                       BDD100K.seg_class_names))["vision_info"]
    classes = yaml.safe_load(info.database_location)
    assert classes["segmentation/label"] == {0: "background", 1: "road", 2: "lane"}
    assert classes["detections"] == ["car"]
    assert info.method and info.database_version == 1


def test_label_info_holds_the_label_images_class_map():
    products = ModelProducts(Header(), "HybridNets (BDD100K)", BDD100K.class_names,
                             BDD100K.seg_class_names)
    info = model_outputs(products)["label_info"]
    assert BY_NAME["label_info"].topic == BY_NAME["segmentation_label"].topic.replace("label", "label_info")
    assert [(c.class_id, c.class_name) for c in info.class_map] == [
        (0, "background"), (1, "road"), (2, "lane")]
    assert info.threshold == 0.0  # argmax per pixel


def test_bag_metadata_humble_reads(tmp_path):
    from nav_msgs.msg import OccupancyGrid
    from vision_msgs.msg import Detection2DArray
    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/drivable/grid", OccupancyGrid(), 10, BY_NAME["drivable_grid"].qos)
        bag.write("/detections", Detection2DArray(), 20, BY_NAME["detections"].qos)
    check_humble_metadata(tmp_path / "bag", {"/drivable/grid": (1, 1), "/detections": (2, 1)})
    with BagReader(tmp_path / "bag") as reader:  # and rosbags still reads it
        assert {t.name: t.count for t in reader.topics()} == {"/drivable/grid": 1, "/detections": 1}


def test_sqlite3_bag_answers_humbles_queries(tmp_path):
    """Humble's rosbag2 has only the sqlite3 storage plugin (rosbag2/package.xml there:
    rosbag2_storage_default_plugins, the sqlite3 one; MCAP needs
    ros-humble-rosbag2-storage-mcap). A `--storage sqlite3` bag answers the queries of
    Humble's plugin (rosbag2_storage_default_plugins/.../sqlite/sqlite_storage.cpp: the
    topics with offered_qos_profiles, messages joined to topics) with the messages as
    written, and rosbags reads it back."""
    import sqlite3
    from nav_msgs.msg import OccupancyGrid
    from rclpy.serialization import deserialize_message
    grid = OccupancyGrid()
    grid.header.frame_id = "base_footprint"
    grid.info.width, grid.info.height = 3, 2
    grid.data = [0, 100, -1, 0, 0, 100]
    with BagWriter(tmp_path / "bag", storage="sqlite3") as bag:
        bag.write("/drivable/grid", grid, 10, BY_NAME["drivable_grid"].qos)
        bag.write("/drivable/grid", grid, 20, BY_NAME["drivable_grid"].qos)
    check_humble_metadata(tmp_path / "bag", {"/drivable/grid": (1, 1)})
    info = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())[
        "rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "sqlite3"
    (db,) = info["relative_file_paths"]
    with sqlite3.connect(tmp_path / "bag" / db) as conn:
        topics = conn.execute("SELECT name, type, serialization_format, offered_qos_profiles "
                              "FROM topics ORDER BY id;").fetchall()
        assert [t[:3] for t in topics] == [("/drivable/grid", "nav_msgs/msg/OccupancyGrid", "cdr")]
        (profile,) = yaml.safe_load(topics[0][3])
        assert profile["durability"] == 1  # transient local, as the node offers it
        rows = conn.execute("SELECT data, timestamp, topics.name, messages.id FROM messages JOIN "
                            "topics ON messages.topic_id = topics.id ORDER BY timestamp;").fetchall()
    assert [(r[1], r[2]) for r in rows] == [(10, "/drivable/grid"), (20, "/drivable/grid")]
    back = deserialize_message(rows[0][0], OccupancyGrid)
    assert back.header.frame_id == "base_footprint" and list(back.data) == list(grid.data)
    with BagReader(tmp_path / "bag") as reader:
        assert [(t.name, t.count) for t in reader.topics()] == [("/drivable/grid", 2)]
        (_, _, _, first), _ = list(reader.messages({"/drivable/grid"}))
        assert list(first.data) == list(grid.data)


def test_rviz_layout_has_the_default_tools_and_latched_maps():
    layout = yaml.safe_load((REPO / "config" / "hybridnets.rviz").read_text())["Visualization Manager"]
    tools = [t["Class"].split("/")[1] for t in layout["Tools"]]
    assert tools == ["Interact", "MoveCamera", "Select", "FocusCamera", "Measure",
                     "SetInitialPose", "SetGoal", "PublishPoint"]
    maps = [d for d in layout["Displays"] if d["Class"] == "rviz_default_plugins/Map"]
    assert maps and all(d["Topic"]["Durability Policy"] == "Transient Local" for d in maps)


def test_rosdep_keys_per_distro():
    package = ET.parse(REPO / "package.xml").getroot()

    def keys(distro):
        """The exec_depend keys rosdep installs on ``distro`` (conditions evaluated)."""
        out = set()
        for dep in package.iter("exec_depend"):
            condition = dep.get("condition")
            if condition:
                left, op, right = condition.split()
                assert left == "$ROS_DISTRO" and op in ("==", "!="), condition
                if (distro == right) != (op == "=="):
                    continue
            out.add(dep.text)
        return out
    for distro in ("humble", "jazzy", "kilted"):
        # the node and tools import these; pip keys as named in rosdistro's python.yaml
        assert {"python3-yaml", "python3-onnxruntime-pip", "python3-rosbags-pip"} <= keys(distro)
        assert len(keys(distro) & {"python3-torch", "python3-pytorch-pip"}) == 1, distro
    assert "python3-torch" in keys("humble") and "python3-pytorch-pip" in keys("jazzy")


def test_message_payloads_keep_the_pixels_and_any_class_id():
    """The LUT colouring equals indexing the palette (ids past it: black), and every array
    message carries exactly the numpy bytes it was built from, as array.array."""
    import array

    from std_msgs.msg import Header
    from hybridnets_ros.core.bev import GridSpec
    from hybridnets_ros.core.visualize import colorize
    from hybridnets_ros.ros import messages
    colors = ((0, 0, 0), (75, 180, 60), (255, 215, 0))
    class_map = np.random.default_rng(0).integers(0, 5, (37, 53), dtype=np.uint8)
    expected = np.concatenate([np.asarray(colors, np.uint8), np.zeros((2, 3), np.uint8)])[class_map]
    np.testing.assert_array_equal(colorize(class_map, colors), expected)
    header = Header(frame_id="f")
    image = messages.image(header, expected, "rgb8")
    assert isinstance(image.data, array.array) and image.data.typecode == "B"
    np.testing.assert_array_equal(np.frombuffer(image.data, np.uint8).reshape(37, 53, 3), expected)
    grid = GridSpec()
    values = np.random.default_rng(1).integers(-1, 101, (grid.height, grid.width), dtype=np.int8)
    msg = messages.occupancy_grid(header, values, grid)
    assert msg.data.typecode == "b"
    np.testing.assert_array_equal(np.frombuffer(msg.data, np.int8).reshape(values.shape), values)
    depth = np.random.default_rng(2).random((4, 6), dtype=np.float32)
    np.testing.assert_array_equal(np.frombuffer(messages.depth_image(header, depth).data, np.float32),
                                  depth.ravel())
    points = np.random.default_rng(3).random((9, 3)).astype(np.float32)
    cloud = messages.point_cloud(header, points)
    np.testing.assert_array_equal(np.frombuffer(cloud.data, np.float32).reshape(-1, 3), points)
