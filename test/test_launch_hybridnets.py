"""Proof of life of launch/hybridnets.launch.py under the real launch, launch_ros and
launch_testing (as Isaac ROS and Autoware test their launch files): in a namespace the node
comes up active by itself; with autostart:=false it stays unconfigured until launch_ros'
lifecycle events (ChangeState, then OnStateTransition) drive it to active; either way the
outputs of published frames come back, and launch's shutdown (SIGINT to the node, as Ctrl-C
on `ros2 launch`) ends it with exit status 0 before launch's SIGTERM timeout.
"""
import unittest

import pytest

from conftest import need_modules

need_modules("launch", "launch_ros", "launch_testing", "launch_testing_ros")

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import EmitEvent, OpaqueFunction, RegisterEventHandler  # noqa: E402
from launch_ros.event_handlers import OnStateTransition  # noqa: E402
from launch_ros.events.lifecycle import ChangeState  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402

import launch_support as ls  # noqa: E402
import ros_graph as rg  # noqa: E402  (isolated DDS domain: the launched node inherits it)


def _node_path(namespace: str) -> str:
    return f"/{namespace}/hybridnets_node" if namespace else "/hybridnets_node"


@pytest.mark.rostest
@pytest.mark.slow  # two node processes, one after the other
@launch_testing.parametrize("namespace, autostart", [("front", "true"), ("", "false")])
def generate_test_description(namespace, autostart):
    transitions = []  # goal states, as launch_ros saw the node's transition events
    is_node = lambda action: action.node_name == _node_path(namespace)  # noqa: E731
    # without autostart, launch is the lifecycle manager: its second step (the first,
    # configure, is the test's)
    manager = [] if autostart == "true" else [RegisterEventHandler(OnStateTransition(
        goal_state="inactive", entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=is_node, transition_id=Transition.TRANSITION_ACTIVATE))]))]
    return LaunchDescription([
        RegisterEventHandler(OnStateTransition(entities=[OpaqueFunction(
            function=lambda context: transitions.append(context.locals.event.goal_state))])),
        *manager,
        ls.include("hybridnets.launch.py", namespace=namespace, autostart=autostart),
        launch_testing.actions.ReadyToTest(),
    ]), {"transitions": transitions, "is_node": is_node}


class TestNode(unittest.TestCase):

    def test_comes_up_and_answers_frames(self, launch_service, namespace, autostart, transitions,
                                         is_node):
        rg.init_rclpy()
        probe = rg.Probe(namespace=namespace)  # image, camera_info, outputs: in the namespace
        try:
            lifecycle = rg.Lifecycle(probe, _node_path(namespace))
            # The node answers once its start-up is over: autostart has made it active by then.
            first = lifecycle.state(ls.STARTUP_S)
            if autostart == "true":
                self.assertEqual(first, "active")
            else:
                self.assertEqual((first, transitions), ("unconfigured", []))
                self.assertEqual(probe.image_pub.get_subscription_count(), 0)
                launch_service.emit_event(ChangeState(
                    lifecycle_node_matcher=is_node, transition_id=Transition.TRANSITION_CONFIGURE))
                self.assertTrue(rg.wait_for(lambda: lifecycle.state() == "active", ls.STARTUP_S))
                # launch_ros saw every step (its transition events come on their own time)
                steps = ["configuring", "inactive", "activating", "active"]
                self.assertTrue(rg.wait_for(lambda: transitions == steps, 30), transitions)
            self.assertTrue(rg.wait_for(lambda: probe.image_pub.get_subscription_count() > 0, 60))

            def publish(stamp):
                image, info = ls.frame(stamp)
                probe.info_pub.publish(info)
                probe.image_pub.publish(image)
            wanted = {"detections", "drivable/mask", "drivable/grid"}
            stamp = ls.publish_until(publish, lambda s: wanted <= set(probe.got(s)))
            self.assertEqual(probe.got(stamp)["drivable/mask"].width, ls.SIZE[1])
        finally:
            probe.close()


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_sigint_ends_the_node_with_status_0(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
