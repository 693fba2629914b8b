"""SIGINT and SIGTERM at any moment end hybridnets_node with exit status 0 within
``STOP_WITHIN_S`` (issue 31): during the imports at start-up (Python's default handlers: a
traceback, exit -2 or -15) and during a background engine build (native code still running
in its thread when the interpreter finalised: "terminate called without an active
exception", exit -6); and the node runs with a read-only HOME, saying where its log file
goes. Configure and a frame in flight: test_dds.py."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import ros_graph as rg  # sets the DDS environment before rclpy is imported
from conftest import REPO
from hybridnets_ros.ros.log_dir import NO_LOG_FILE, configure_log_dir


def console_script(name: str) -> tuple[str, str]:
    """What the console script ``name`` that setup.py declares runs, as python arguments."""
    module, function = re.search(rf'"{name} = ([\w.]+):(\w+)"',
                                 (REPO / "setup.py").read_text()).groups()
    return "-c", f"import sys; from {module} import {function}; sys.exit({function}())"


MODULE = ("-m", "hybridnets_ros.ros.node")
CRASHES = ("Traceback", "terminate called", "KeyboardInterrupt", "core dumped")


def outcome(seconds: float, code: int, log: str) -> str | None:
    """What is wrong with how a signalled node ended (None: exit 0 in time, quietly)."""
    crashes = [c for c in CRASHES if c in log]
    if code == 0 and seconds < rg.STOP_WITHIN_S and not crashes:
        return None
    return f"exit {code} after {seconds:.2f} s{', ' + ', '.join(crashes) if crashes else ''}"


@pytest.mark.slow  # hybridnets_node processes
def test_a_signal_during_start_up_ends_the_node_at_once(tmp_path):
    """Both entry points, signalled while the interpreter imports torch, cv2 and rclpy (the
    first second; Python itself is up after ~0.1 s)."""
    script = console_script("hybridnets_node")
    wrong = []
    for delay, sig, (how, entry) in [(0.3, signal.SIGINT, ("python -m", MODULE)),
                                     (0.6, signal.SIGTERM, ("python -m", MODULE)),
                                     (0.3, signal.SIGTERM, ("console script", script)),
                                     (0.9, signal.SIGINT, ("console script", script))]:
        log_path = tmp_path / f"{how}-{sig.name}-{delay}.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, *entry, "--ros-args", "-p",
                                     "allow_random_weights:=true"],
                                    stdout=log, stderr=subprocess.STDOUT)
            time.sleep(delay)
            seconds, code = rg.signal_and_wait(proc, sig)
        if problem := outcome(seconds, code, log_path.read_text()):
            wrong.append(f"{how}, {sig.name} at {delay} s: {problem}\n"
                         f"{log_path.read_text()[-1500:]}")
    assert not wrong, "\n".join(wrong)


def send_until(probe, image, condition, node, timeout: float = 120) -> None:
    """Publishes ``image`` every 0.2 s until ``condition()``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and node.alive(), node.log()
        probe.image_pub.publish(image)
        time.sleep(0.2)


# Images whose network inputs (at input_size 640) differ from each other and from the
# configured 1280x720's (384x640): each node builds a new engine, an ONNX export and an
# ONNX Runtime session, in its background thread.
NEW_SIZES = [(640, 640), (640, 480), (480, 640)]


@pytest.mark.slow  # hybridnets_node processes
def test_a_signal_during_a_background_engine_build_ends_the_node_with_exit_0(
        tmp_path, random_weights, isolated_cache):
    """Three nodes (the abort came in 3 of 7 runs on a 2-core Zen 5), each signalled while the
    engine for a new image size is being built; the test's own cache (no other test has
    exported these sizes into it) keeps the configured size's engine, so later nodes start
    quickly."""
    rg.init_rclpy()
    wrong = []
    for i, (width, height) in enumerate(NEW_SIZES):
        sig = (signal.SIGINT, signal.SIGTERM)[i % 2]
        namespace = f"build{i}"
        node = rg.NodeProcess(tmp_path / f"{namespace}.log", {
            "weights": random_weights, "backend": "onnxruntime"}, namespace=namespace)
        probe = rg.Probe(namespace=namespace)
        try:
            probe.wait_ready(node, timeout=180)
            frame = rg.image_msg(np.full((height, width, 3), 90, np.uint8), 10**9)
            send_until(probe, frame, lambda: "building engine for" in node.log(), node)
            time.sleep(0.3 * (i % 3))  # into the build: the export, then the session
            assert "built in" not in node.log(), "the build ended before the signal"
            seconds, code = rg.signal_and_wait(node.proc, sig)
        finally:
            probe.close()
            node.stop()
        if problem := outcome(seconds, code, node.log()):
            wrong.append(f"{width}x{height} {sig.name}: {problem}\n{node.log()[-1500:]}")
    assert not wrong, "\n".join(wrong)


# Holds autostart's activate open for 0.4 s after the node says "active", as a slow
# machine does for milliseconds: the window where the signals came.
HELD_ACTIVATE = ("-c", "import sys, time; import hybridnets_ros.ros.node as node\n"
                       "activate = node.HybridNetsNode.on_activate\n"
                       "def held(self, state):\n"
                       "    result = activate(self, state); time.sleep(0.4); return result\n"
                       "node.HybridNetsNode.on_activate = held; node.main()")


@pytest.mark.slow  # a hybridnets_node process
def test_a_signal_during_activation_ends_the_node_with_exit_0(tmp_path, random_weights):
    """ROS shut down from the signal's thread under a transition the main thread was
    running crashed the process (SIGSEGV in rcl_lifecycle): 3 of 4 Ctrl-Cs sent as the node
    logged "active" at start-up; every one with the activate held open."""
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights},
                          namespace="activating", python_args=HELD_ACTIVATE)
    try:
        deadline = time.monotonic() + 120
        while "active: listening" not in node.log():
            assert time.monotonic() < deadline and node.alive(), node.log()
            time.sleep(0.01)
        seconds, code = rg.signal_and_wait(node.proc, signal.SIGINT)
    finally:
        node.stop()
    assert outcome(seconds, code, node.log()) is None, \
        f"{outcome(seconds, code, node.log())}\n{node.log()[-1500:]}"


def read_only_home(tmp_path) -> tuple[dict, tuple[str, ...]]:
    """(an environment whose HOME is a read-only directory and that names no other log
    directory, the interpreter arguments that make it read-only for root too)."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    env = {k: v for k, v in os.environ.items() if k not in ("ROS_LOG_DIR", "ROS_HOME")}
    env["HOME"] = str(home)
    env["TMPDIR"] = str(tmp_path)  # where the node's log file goes instead
    python_args: tuple[str, ...] = ()
    if os.geteuid() == 0:
        # root writes anywhere through CAP_DAC_OVERRIDE: drop it (and CAP_DAC_READ_SEARCH)
        # from the bounding set, which an exec'd root process takes its capabilities from.
        python_args = ("-c", "import ctypes, os, sys; prctl = ctypes.CDLL(None).prctl; "
                             "[prctl(24, cap, 0, 0, 0) for cap in (1, 2)]; "  # PR_CAPBSET_DROP
                             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    probe = subprocess.run([sys.executable, *python_args, "-c", "import os, sys; "
                            "sys.exit(os.access(sys.argv[1], os.W_OK))", str(home)])
    if probe.returncode:
        pytest.skip("cannot make a directory read-only for this user (no CAP_SETPCAP?)")
    return env, python_args


@pytest.mark.slow  # hybridnets_node processes
def test_with_a_read_only_home_the_node_runs_logs_to_a_temporary_dir_and_stops_cleanly(
        tmp_path, random_weights):
    """rcl's log file would go to ~/.ros/log: rclpy.init failed and the node died. Stopped,
    it leaves the graph at once (its lease would keep it there 20 s more)."""
    rg.init_rclpy()
    env, python_args = read_only_home(tmp_path)
    node = rg.NodeProcess(tmp_path / "node.log", {
        "weights": random_weights, "backend": "torch", "input_size": 256},
        namespace="rohome", env=env, python_args=python_args)
    probe = rg.Probe(namespace="rohome")
    try:
        probe.wait_ready(node)
        frame = rg.image_msg(np.full((360, 640, 3), 90, np.uint8), 10**9)
        send_until(probe, frame, lambda: probe.got(10**9).get("detections"), node)
        log = node.log()
        assert f"ROS's log directory {env['HOME']}/.ros/log (from HOME) cannot be written" in log
        fallback = log.split("log file in ")[1].split(":")[0]
        assert fallback.startswith(str(tmp_path)) and list(os.scandir(fallback)), log
        seconds, code = rg.signal_and_wait(node.proc, signal.SIGINT)
        assert outcome(seconds, code, node.log()) is None, outcome(seconds, code, node.log())
        assert probe.wait_for(lambda: ("hybridnets_node", "/rohome") not in
                              probe.get_node_names_and_namespaces()
                              and probe.image_pub.get_subscription_count() == 0, 10), \
            "the stopped node is still in the graph"
    finally:
        probe.close()
        node.stop()


@pytest.fixture
def no_log_dir_set(monkeypatch, tmp_path):
    """HOME under a regular file (nothing can be created there, whoever runs the test), no
    ROS_LOG_DIR or ROS_HOME (restored afterwards, also the ROS_LOG_DIR the code sets)."""
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("HOME", str(blocked / "home"))
    monkeypatch.delenv("ROS_LOG_DIR", raising=False)
    monkeypatch.delenv("ROS_HOME", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return blocked


def test_an_unwritable_log_directory_is_replaced_by_a_temporary_one_and_named(
        no_log_dir_set, tmp_path, monkeypatch):
    args, [(level, message)] = configure_log_dir()
    fallback = os.environ["ROS_LOG_DIR"]
    assert args == [] and level == "warning" and fallback.startswith(str(tmp_path))
    assert message.startswith(f"log file in {fallback}: ROS's log directory "
                              f"{no_log_dir_set}/home/.ros/log (from HOME) cannot be written "
                              "(Not a directory)")
    # where nothing at all can be written, the node logs to the console only
    monkeypatch.delenv("ROS_LOG_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(no_log_dir_set / "tmp"))
    args, [(level, message)] = configure_log_dir()
    assert args == NO_LOG_FILE and "ROS_LOG_DIR" not in os.environ
    assert level == "warning" and "logging to the console only" in message


def test_a_writable_log_directory_is_kept_and_named(tmp_path, monkeypatch):
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "logs"))
    assert configure_log_dir() == ([], [("info", f"log file in {tmp_path}/logs")])
    assert os.environ["ROS_LOG_DIR"] == str(tmp_path / "logs")
