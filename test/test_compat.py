"""What other ROS tools read: the Nav2 costmap snippet, the outputs' QoS, the label and
colour images and the class map, bags for every rosbag2 distro, the RViz layout, rosdep keys."""
import xml.etree.ElementTree as ET

import numpy as np
import yaml
from rclpy.qos import QoSDurabilityPolicy, QoSReliabilityPolicy
from std_msgs.msg import Header

from conftest import REPO
from hybridnets_ros.core.bev import BevProjector, GridSpec
from hybridnets_ros.core.camera import CameraModel
from hybridnets_ros.core.postprocess import Detections
from hybridnets_ros.core.spec import BDD100K
from hybridnets_ros.core.synthetic import default_camera
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.pipeline.pipeline import Result
from hybridnets_ros.ros.outputs import (BY_NAME, SEG_PALETTE_RGB, FrameProducts, ModelProducts,
                                        enabled_outputs, model_outputs)
from hybridnets_ros.tools.bags import BagReader, BagWriter


def costmap():
    return yaml.safe_load((REPO / "config" / "nav2_costmap.yaml").read_text())[
        "local_costmap"]["local_costmap"]["ros__parameters"]


def test_nav2_snippet_reads_the_grid_and_admits_the_points():
    params = costmap()
    assert params["track_unknown_space"] is True  # -1 cells must not become free
    layers = {name: params[name] for name in params["plugins"]}
    static = next(l for l in layers.values() if l["plugin"] == "nav2_costmap_2d::StaticLayer")
    assert static["map_topic"].lstrip("/") == BY_NAME["drivable_grid"].topic
    assert static["map_subscribe_transient_local"] is True and static["track_unknown_space"]
    obstacle = next(l for l in layers.values() if l["plugin"] == "nav2_costmap_2d::ObstacleLayer")
    z = NodeConfig().points_z
    sources = obstacle["observation_sources"].split()
    assert sources
    for source in sources + ["lane_lines"]:
        s = obstacle[source]
        assert s["topic"].lstrip("/") in {BY_NAME["drivable_points"].topic, BY_NAME["lane_points"].topic}
        assert s["min_obstacle_height"] < z < min(s["max_obstacle_height"],
                                                  obstacle["max_obstacle_height"])


def test_grids_are_latched_for_transient_local_subscribers():
    for name in ("drivable_grid", "lane_grid", "vision_info"):
        qos = BY_NAME[name].qos
        assert qos.durability == QoSDurabilityPolicy.TRANSIENT_LOCAL, name
        assert qos.reliability == QoSReliabilityPolicy.RELIABLE and qos.depth == 1


def _products(seg_mask, config=NodeConfig(points_z=0.7)):
    camera = default_camera()
    projector = BevProjector(CameraModel.from_pose(camera.K, 1280, 720, config.camera_pose),
                             GridSpec())
    result = Result(Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                               np.zeros(0, np.int64)), seg_mask, letterbox=None)
    products = FrameProducts(Header(frame_id="cam"), np.zeros((720, 1280, 3), np.uint8), result,
                             ("car",), "base_link", config.points_z, projector)
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
    assert len({tuple(c) for c in SEG_PALETTE_RGB}) == 3  # one colour per class
    for cls in range(3):
        assert np.all(rgb[seg == cls] == SEG_PALETTE_RGB[cls])
    assert {"segmentation_label", "segmentation_color"} <= enabled_outputs(NodeConfig())
    assert "vision_info" not in enabled_outputs(NodeConfig())  # latched, not per frame


def test_vision_info_names_the_classes():
    info = model_outputs(ModelProducts(Header(), "HybridNets (BDD100K)", BDD100K.class_names,
                                       BDD100K.seg_class_names))["vision_info"]
    classes = yaml.safe_load(info.database_location)
    assert classes["segmentation/label"] == {0: "background", 1: "road", 2: "lane"}
    assert classes["detections"] == ["car"]
    assert info.method and info.database_version == 1


def test_bag_metadata_humble_reads(tmp_path):
    from nav_msgs.msg import OccupancyGrid
    from vision_msgs.msg import Detection2DArray
    with BagWriter(tmp_path / "bag") as bag:
        bag.write("/drivable/grid", OccupancyGrid(), 10, BY_NAME["drivable_grid"].qos)
        bag.write("/detections", Detection2DArray(), 20, BY_NAME["detections"].qos)
    check_humble_metadata(tmp_path / "bag", {"/drivable/grid": (1, 1), "/detections": (2, 1)})
    with BagReader(tmp_path / "bag") as reader:  # and rosbags still reads it
        assert {t.name: t.count for t in reader.topics()} == {"/drivable/grid": 1, "/detections": 1}


def check_humble_metadata(bag, expected: dict[str, tuple[int, int]]) -> None:
    """``bag``'s metadata is what Humble's rosbag2 reads (version 8, offered_qos_profiles a
    YAML string of rmw enum values) and its MCAP file what rosbag2 writes; ``expected``:
    topic -> (durability, reliability) as rmw values (1 transient local / reliable,
    2 volatile / best effort)."""
    from mcap.reader import make_reader
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"]
              for t in info["topics_with_message_count"]}
    assert set(expected) <= set(topics)
    for name, (durability, reliability) in expected.items():
        qos_text = topics[name]["offered_qos_profiles"]
        assert isinstance(qos_text, str), "Humble parses this field as a string"
        (profile,) = yaml.safe_load(qos_text)
        assert (profile["durability"], profile["reliability"]) == (durability, reliability), name
        assert topics[name]["type_description_hash"].startswith("RIHS01_")
    for path in bag.glob("*.mcap"):
        with open(path, "rb") as stream:
            summary = make_reader(stream).get_summary()
        for channel in summary.channels.values():
            assert channel.metadata["topic_type_hash"] == topics[channel.topic]["type_description_hash"]
            assert channel.metadata["offered_qos_profiles"] == topics[channel.topic]["offered_qos_profiles"]
        for schema in summary.schemas.values():
            text = schema.data.decode()
            headers = [line for line in text.splitlines() if line.startswith("MSG: ")]
            assert headers, schema.name  # every output type has dependencies
            assert all(line.count("/") == 2 and "/msg/" in line for line in headers), headers
            assert text.count("\n" + "=" * 80 + "\nMSG: ") == len(headers)


def test_rviz_layout_has_the_default_tools_and_latched_maps():
    layout = yaml.safe_load((REPO / "config" / "hybridnets.rviz").read_text())["Visualization Manager"]
    tools = [t["Class"].split("/")[1] for t in layout["Tools"]]
    assert tools == ["Interact", "MoveCamera", "Select", "FocusCamera", "Measure",
                     "SetInitialPose", "SetGoal", "PublishPoint"]
    maps = [d for d in layout["Displays"] if d["Class"] == "rviz_default_plugins/Map"]
    assert maps and all(d["Topic"]["Durability Policy"] == "Transient Local" for d in maps)


def test_rosdep_keys():
    package = ET.parse(REPO / "package.xml").getroot()
    keys = {d.text for d in package.iter("exec_depend")}
    # used by the node and the tools; pip keys exist in rosdistro's python.yaml
    assert {"python3-yaml", "python3-onnxruntime-pip", "python3-rosbags-pip"} <= keys
    assert "python3-torch-pip" not in keys  # no such rosdep key
