"""camera_info_sync exact: images paired with the CameraInfo of their stamp, by message_filters'
TimeSynchronizer and by the node's own pairing (its fallback) alike; and what /diagnostics
says of the pairing and of the lifecycle manager's bond."""
import time

import pytest
from sensor_msgs.msg import CameraInfo, Image

from conftest import need_modules
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.ros.diagnostics import NodeHealth, camera_problem, camera_values, health
from hybridnets_ros.ros.pairing import QUEUE_SIZE, exact_pairs


def stamped(kind, sec: int, nanosec: int = 0):
    msg = kind()
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


@pytest.fixture(params=["message_filters", "own"])
def pairer(request):
    """A pairer and the (image, info) pairs it handed on."""
    if request.param == "message_filters":
        need_modules("message_filters")
    got = []
    pairs = exact_pairs(lambda image, info: got.append((image, info)),
                        library=request.param == "message_filters")
    assert pairs.library == (request.param == "message_filters")
    return pairs, got


def test_pairs_by_equal_stamps_in_either_order(pairer):
    pairs, got = pairer
    a, a_info = stamped(Image, 1), stamped(CameraInfo, 1)
    b, b_info = stamped(Image, 2), stamped(CameraInfo, 2)
    pairs.add(0, a)
    assert got == []  # waits for its CameraInfo
    pairs.add(1, b_info)  # CameraInfo first
    pairs.add(1, a_info)
    assert got == [(a, a_info)]
    pairs.add(0, b)
    assert got == [(a, a_info), (b, b_info)]


def test_a_stamp_without_its_partner_is_never_handed_on(pairer):
    pairs, got = pairer
    pairs.add(0, stamped(Image, 1))
    pairs.add(1, stamped(CameraInfo, 1, 1))  # 1 ns apart: no pair
    pairs.add(1, stamped(CameraInfo, 2))      # the latest CameraInfo is not taken either
    assert got == []
    image = stamped(Image, 2)
    pairs.add(0, image)
    assert [p[0] for p in got] == [image]


def test_waiting_messages_are_bounded(pairer):
    """A driver whose CameraInfo never matches: at most QUEUE_SIZE images wait."""
    pairs, got = pairer
    images = [stamped(Image, 100 + i) for i in range(3 * QUEUE_SIZE)]
    for image in images:
        pairs.add(0, image)
    for image in images:  # their CameraInfo arrives late: only the newest still wait
        pairs.add(1, stamped(CameraInfo, image.header.stamp.sec))
    assert [p[0] for p in got] == images[-QUEUE_SIZE:]


# ---- /diagnostics

def _Camera(pairs=None, last_image=None, last_paired=None):
    """The node's own per-camera record, as camera_problem and camera_values read it."""
    from hybridnets_ros.ros.node import Camera
    return Camera("", pairs=pairs, last_image=last_image, last_paired=last_paired)


def test_exact_sync_says_when_no_image_finds_its_camera_info():
    config = NodeConfig(camera_info_sync="exact")
    now = time.monotonic()
    pairs = exact_pairs(lambda *_: None, library=False)
    starved = _Camera(pairs, last_image=now, last_paired=None)
    problem = camera_problem(starved, config, listening_since=now - 10)
    assert problem.startswith("no image on image had a CameraInfo of its stamp on camera_info")
    assert camera_values(starved, 0)["camera_info_sync"] == "exact (own pairing)"
    assert camera_problem(_Camera(pairs, now, now), config, now - 10) is None
    assert camera_problem(_Camera(None, now, None), NodeConfig(), now - 10) is None  # latest


def test_a_broken_bond_is_a_warning_while_it_lasts():
    from diagnostic_msgs.msg import DiagnosticStatus as D
    node = NodeHealth("hybridnets_node", "/hybridnets_node", "cpu", "active", NodeConfig(), None,
                      None, time.monotonic(), False, bond="broken",
                      bond_problem="the manager stopped or sent no heartbeat for 4 s")
    now = time.monotonic()
    level, message = health(node, [_Camera(last_image=now)])
    assert level == D.WARN and message.startswith("lifecycle manager bond broken: the manager")
    node.bond, node.bond_problem = "no lifecycle manager bonded", None
    assert health(node, [_Camera(last_image=now)]) == (D.OK, "ok")  # no manager: nothing wrong
