"""Proof of life of launch/multi_camera.launch.py under the real launch, launch_ros and
launch_testing, in a robot's namespace: with namespace:=robot1, camera <name> reads
/robot1/<name>/image_raw and /robot1/<name>/camera_info, the outputs come back under
/robot1/hybridnets/ (per camera and the fused grid), and launch's shutdown (SIGINT) ends the
node with exit status 0.
"""
import unittest

import pytest

from conftest import need_modules

need_modules("launch", "launch_ros", "launch_testing", "launch_testing_ros")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch import LaunchDescription  # noqa: E402

import launch_support as ls  # noqa: E402
import ros_graph as rg  # noqa: E402  (isolated DDS domain: the launched node inherits it)

CAMERAS = ("front", "left")


@pytest.mark.rostest
@pytest.mark.slow  # a node process
def generate_test_description():
    return LaunchDescription([
        ls.include("multi_camera.launch.py", namespace="robot1", cameras=",".join(CAMERAS),
                   camera_poses="0,0,1.5,0,0.1,0, 0,0.5,1.5,0,0.1,1.5708"),
        launch_testing.actions.ReadyToTest(),
    ])


class TestNode(unittest.TestCase):

    def test_cameras_and_outputs_in_the_robot_namespace(self):
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray

        rg.init_rclpy()
        probe = rg.Probe(namespace="robot1")  # the names below are relative: /robot1/...
        arrived = {camera: set() for camera in CAMERAS}
        fused = []
        pubs = {}
        for camera in CAMERAS:
            pubs[camera] = (
                probe.create_publisher(Image, f"{camera}/image_raw", qos_profile_sensor_data),
                probe.create_publisher(CameraInfo, f"{camera}/camera_info",
                                       qos_profile_sensor_data))
            probe.create_subscription(
                Detection2DArray, f"hybridnets/{camera}/detections",
                lambda msg, camera=camera: arrived[camera].add(rg.stamp_ns(msg.header)),
                rg.OUTPUT_QOS)
        probe.create_subscription(OccupancyGrid, "hybridnets/fused/drivable/grid", fused.append,
                                  rg.OUTPUT_QOS)
        try:
            lifecycle = rg.Lifecycle(probe, "/robot1/hybridnets/hybridnets_node")
            self.assertEqual(lifecycle.state(ls.STARTUP_S), "active")
            self.assertTrue(rg.wait_for(lambda: all(
                image.get_subscription_count() > 0 for image, _ in pubs.values()), 60))

            def publish(stamp):
                for image_pub, info_pub in pubs.values():
                    image, info = ls.frame(stamp)
                    info_pub.publish(info)
                    image_pub.publish(image)
            ls.publish_until(publish, lambda s: all(s in arrived[c] for c in CAMERAS))
            # both cameras see the ground in front of and beside the vehicle
            self.assertTrue(rg.wait_for(lambda: any(max(g.data) >= 0 for g in fused), 60))
        finally:
            probe.close()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_sigint_ends_the_node_with_status_0(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
