"""DDS set-up (the shipped Fast DDS profile), outputs under each discovery setting, and a
bounded shutdown on SIGINT/SIGTERM."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from hybridnets_ros.ros.dds import configure_dds


def test_the_shipped_profile_is_set_where_nothing_is_configured():
    env = {}
    [(level, message)] = configure_dds(env)
    assert level == "info" and env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("config/fastdds.xml")
    assert "fastdds.xml" in message
    humble = {"ROS_DISTRO": "humble"}  # Fast DDS 2.6 reads only the older name
    configure_dds(humble)
    assert humble["FASTRTPS_DEFAULT_PROFILES_FILE"] == env["FASTDDS_DEFAULT_PROFILES_FILE"]
    profile = (REPO / "config" / "fastdds.xml").read_text()
    assert "<type>SHM</type>" in profile and "<type>UDPv4</type>" in profile


@pytest.mark.parametrize("env, level, says", [
    ({"FASTRTPS_DEFAULT_PROFILES_FILE": "/etc/mine.xml"}, "info", "/etc/mine.xml"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}, "info", "LARGE_DATA"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
     "warning", "loses large messages"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_LOCALHOST_ONLY": "1"},
     "warning", "loses large messages"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT"}, "warning", "fragmented UDP"),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, "info", "rmw_cyclonedds_cpp"),
])
def test_a_users_own_dds_setting_is_kept_and_a_starving_one_named(env, level, says):
    before = dict(env)
    [(got_level, message)] = configure_dds(env)
    assert env == before, "the user's own setting must not be changed"
    assert got_level == level and says in message


@pytest.mark.slow  # one node process per setting
def test_every_output_arrives_under_each_discovery_setting(tmp_path):
    """The localhost-only settings users are told to use on one machine: detections, grids
    and both 1280x720 masks reach a sensor-data subscriber in another process."""
    settings = "profile,profile+localhost,profile+localhost_only"
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "dds_check.py"), "table",
                           "--settings", settings, "--timeout", "60", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print("\n" + proc.stdout)


# ------------------------------------------------------------------------ shutdown
@pytest.fixture
def rg():
    import ros_graph
    ros_graph.init_rclpy()
    return ros_graph


@pytest.mark.slow
def test_sigint_during_configure_exits_promptly(rg, tmp_path, random_weights, session_cache):
    """Ctrl-C while configure builds the engine (native code in the main thread, where
    Python would only see the signal when it returns)."""
    node = rg.NodeProcess(tmp_path / "node.log", {
        "weights": random_weights, "backend": "onnxruntime", "camera_resolution": "[720, 1280]"},
        namespace="sigint")
    try:
        deadline = time.monotonic() + 120
        while "DDS:" not in node.log() and time.monotonic() < deadline and node.alive():
            time.sleep(0.05)
        time.sleep(2.0)  # into configure: loading, exporting and building take longer
        assert "DDS:" in node.log() and "model ready" not in node.log(), node.log()
        seconds, code = rg.signal_and_wait(node.proc, signal.SIGINT)
    finally:
        node.stop()
    assert seconds < rg.STOP_WITHIN_S and code == 0, f"{seconds:.1f} s, exit {code}:\n{node.log()}"


@pytest.mark.slow
def test_sigterm_with_a_frame_in_flight_exits_promptly(rg, tmp_path, random_weights):
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights, "backend": "torch"},
                          namespace="sigterm")
    probe = rg.Probe(namespace="sigterm")
    try:
        probe.wait_ready(node)
        frame = np.full((720, 1280, 3), 100, np.uint8)
        probe.image_pub.publish(rg.image_msg(frame, 10**9))
        time.sleep(0.15)  # eager torch takes several times that: the frame is in the network
        seconds, code = rg.signal_and_wait(node.proc, signal.SIGTERM)
    finally:
        probe.close()
        node.stop()
    log = node.log()
    assert seconds < rg.STOP_WITHIN_S and code == 0, f"{seconds:.1f} s, exit {code}:\n{log}"
    assert "Traceback" not in log and "RCLError" not in log, log
