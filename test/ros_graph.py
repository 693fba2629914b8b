"""Test harness for the real ROS graph: a hybridnets_node process and a probe node.

Every test session uses its own DDS domain and the shipped Fast DDS profiles (this process
config/fastdds.xml, as the project's commands set it; node processes replace it by
config/fastdds_node.xml, as the node does), so tests neither see nor disturb other ROS
traffic on the machine. HYBRIDNETS_TEST_DDS_ENV ("KEY=VALUE,KEY=VALUE")
adds discovery settings, e.g. ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
"""
from __future__ import annotations

import array
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

# A DDS domain of this test process's own: two pytest runs, or the workers of one run with
# pytest-xdist (`pytest -n 2`), never see each other's nodes.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    DOMAIN_ID = 1 + (os.getppid() % 25) * 4 + int(_WORKER[2:]) % 4
else:
    DOMAIN_ID = 1 + os.getpid() % 100
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
for _name in ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
              "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE",
              "ROS_LOCALHOST_ONLY"):
    os.environ.pop(_name, None)
for _setting in filter(None, os.environ.get("HYBRIDNETS_TEST_DDS_ENV", "").split(",")):
    _name, _, _value = _setting.partition("=")
    os.environ[_name] = _value

from hybridnets_ros.ros.dds import configure_dds  # noqa: E402

configure_dds()  # this process and every node process it starts

import rclpy  # noqa: E402  (after the DDS environment is set)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from hybridnets_ros.ros.messages import message_stamp_ns, stamp_ns  # noqa: E402,F401  (tests use rg.stamp_ns)
from hybridnets_ros.ros.outputs import OUTPUT_QOS  # noqa: E402
from hybridnets_ros.core.registry import adapter  # noqa: E402
from hybridnets_ros.ros.outputs import OUTPUTS as TABLE, supported  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Every per-frame output without a switch (what the probe subscribes to), and those of the
# default model, HybridNets, that every processed frame yields stamped (what test_node
# expects; an empty MarkerArray carries no stamp).
# Not the road geometry's (built only while subscribed): the other tests check none of it;
# test_node's road test subscribes to them itself.
ROAD_OUTPUTS = {o.topic: o.msg_type for o in TABLE if o.needs_road}
ALL_OUTPUTS = {o.topic: o.msg_type for o in TABLE if o.enabled_by is None and o.per_frame
               and not o.needs_road}
OUTPUTS = {o.topic: o.msg_type for o in supported(adapter("hybridnets"))
           if o.enabled_by is None and o.per_frame and hasattr(o.msg_type, "header")
           and not o.needs_road}


def wait_for(condition, timeout: float) -> bool:
    """Polls ``condition`` until it holds (True) or ``timeout`` s pass (its last value)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


# launch stops a node with SIGINT, then SIGTERM 5 s later: it must be gone well before.
STOP_WITHIN_S = 2.0


def wait_for_line(stream, timeout: float) -> str:
    """The next line a process writes to the pipe ``stream`` ("" if none came within
    ``timeout`` s or the pipe closed)."""
    import selectors
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline()


def signal_and_wait(proc: subprocess.Popen, sig: int) -> tuple[float, int]:
    """Sends ``sig`` to ``proc``: (seconds until it ended, its exit status)."""
    started = time.monotonic()
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return time.monotonic() - started, code


class NodeProcess:
    """hybridnets_node in its own process, its log in a file; ``python_args`` go before
    ``-m`` (interpreter options, or ``-c CODE`` that execs the rest), ``env`` replaces the
    environment."""

    def __init__(self, log_path: Path, params: dict, namespace: str = "",
                 env: dict | None = None, python_args: tuple[str, ...] = ()):
        args = [sys.executable, *python_args, "-m", "hybridnets_ros.ros.node", "--ros-args",
                "--params-file", str(REPO / "config" / "hybridnets.yaml")]
        if namespace:
            args += ["-r", f"__ns:=/{namespace.strip('/')}"]
        for key, value in params.items():
            args += ["-p", f"{key}:={value}"]
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Probe(Node):
    """Publishes inputs and keeps every output by input stamp; spins in a background thread."""

    def __init__(self, namespace: str = ""):
        super().__init__("test_probe", namespace=namespace)
        self._target = (f"/{namespace.strip('/')}" if namespace.strip("/") else "") + "/hybridnets_node"
        self.image_pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.compressed_pub = self.create_publisher(CompressedImage, "image/compressed",
                                                    qos_profile_sensor_data)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        self.lock = threading.Lock()
        self.outputs: dict[int, dict[str, object]] = {}
        self.diagnostics: list[DiagnosticArray] = []
        for topic, msg_type in ALL_OUTPUTS.items():
            self.create_subscription(msg_type, topic, self._store(topic), OUTPUT_QOS)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, 10)
        self.executor_, self._thread = spin_in_background(self)

    def _store(self, topic):
        def callback(msg):
            stamp = message_stamp_ns(msg)
            if stamp is None:
                return
            with self.lock:
                self.outputs.setdefault(stamp, {})[topic] = msg
        return callback

    def _on_diag(self, msg):
        # /diagnostics is global: keep only the node under test (same namespace as the probe)
        if any(status.name == "hybridnets_node: perception"
               and any(kv.key == "node" and kv.value == self._target for kv in status.values)
               for status in msg.status):
            with self.lock:
                self.diagnostics.append(msg)

    def wait_for(self, condition, timeout: float) -> bool:
        return wait_for(condition, timeout)

    def wait_ready(self, node: NodeProcess, compressed: bool = False, timeout: float = 90,
                   topic: str = "detections") -> None:
        """Until the node subscribes to the images and publishes ``topic``."""
        pub = self.compressed_pub if compressed else self.image_pub
        ready = self.wait_for(lambda: not node.alive() or (
            pub.get_subscription_count() > 0 and self.count_publishers(topic) > 0), timeout)
        assert ready and node.alive(), (
            f"node did not come up within {timeout} s (alive: {node.alive()}, subscribers: "
            f"{pub.get_subscription_count()}, {topic} publishers: "
            f"{self.count_publishers(topic)}):\n{node.log()}")
        time.sleep(0.5)  # let its publishers match our subscriptions

    def got(self, stamp: int) -> dict:
        with self.lock:
            return dict(self.outputs.get(stamp, {}))

    def latest_diagnostics(self, after: float = 0.0, timeout: float = 5.0) -> dict:
        """Key/values of a /diagnostics message that arrived after ``after`` (monotonic)."""
        count = len(self.diagnostics)
        self.wait_for(lambda: len(self.diagnostics) > count, timeout)
        with self.lock:
            status = self.diagnostics[-1].status[0]
        return {kv.key: kv.value for kv in status.values}

    def wait_diagnostics(self, condition, timeout: float = 15.0) -> dict:
        """The first /diagnostics key/values (from now on) for which ``condition`` holds."""
        seen = len(self.diagnostics)
        found = {}

        def check():
            nonlocal seen, found
            with self.lock:
                new, seen = self.diagnostics[seen:], len(self.diagnostics)
            for msg in new:
                values = {kv.key: kv.value for kv in msg.status[0].values}
                if condition(values):
                    found = values
                    return True
            return False
        assert self.wait_for(check, timeout), "no /diagnostics message met the condition"
        return found

    def wait_status(self, condition, timeout: float = 15.0):
        """The first of this node's DiagnosticStatus (from now on) for which ``condition``
        holds; fails the test with the last one seen otherwise."""
        seen = len(self.diagnostics)
        found = []

        def check():
            nonlocal seen
            with self.lock:
                new, seen = self.diagnostics[seen:], len(self.diagnostics)
            found.extend(msg.status[0] for msg in new)
            return any(condition(status) for status in found)
        met = self.wait_for(check, timeout)
        assert met, f"no /diagnostics status met the condition; last: {found[-1] if found else None}"
        return next(status for status in found if condition(status))

    def close(self):
        close_spinning(self, self.executor_, self._thread)


def call(probe: Probe, client, request, timeout: float = 60.0, resend_after: float = 5.0):
    """Calls an idempotent service, sending the request again every ``resend_after`` s.

    wait_for_service only says that this side has matched the server; with services' volatile
    QoS a request or response sent before the other side has matched ours is dropped for good
    (seen on CI: the first GetState of a freshly started node never answered)."""
    deadline = time.monotonic() + timeout
    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name}: no server"
    while True:
        future = client.call_async(request)
        left = deadline - time.monotonic()
        if probe.wait_for(future.done, min(resend_after, max(left, 0.0))):
            return future.result()
        client.remove_pending_request(future)
        assert time.monotonic() < deadline, f"{client.srv_name}: no answer within {timeout} s"


class Lifecycle:
    """Drives a lifecycle node as a manager does, surviving lost requests and responses.

    A transition is not idempotent, so a request is sent again only after GetState shows that
    the node is still in the state the transition starts from."""

    GOAL = {1: "inactive", 2: "unconfigured", 3: "active", 4: "inactive"}  # lifecycle_msgs/Transition

    def __init__(self, probe: Probe, node_path: str):
        from lifecycle_msgs.srv import ChangeState, GetState
        self._probe = probe
        self._change = probe.create_client(ChangeState, f"{node_path}/change_state")
        self._get = probe.create_client(GetState, f"{node_path}/get_state")

    def state(self, timeout: float = 60.0) -> str:
        from lifecycle_msgs.srv import GetState
        return call(self._probe, self._get, GetState.Request(), timeout).current_state.label

    def request(self, transition_id: int):
        """Sends one transition request without waiting (for tests of queued requests)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState
        return self._change.call_async(ChangeState.Request(transition=Transition(id=transition_id)))

    def change(self, transition_id: int, timeout: float = 120.0) -> bool:
        """True when the transition succeeded (configure builds the engine: slow on a busy CI)."""
        deadline = time.monotonic() + timeout
        assert self._change.wait_for_service(timeout_sec=timeout), "no change_state server"
        start = self.state(timeout)
        future, sent = self.request(transition_id), 1
        while not self._probe.wait_for(future.done, 5.0):
            assert time.monotonic() < deadline, f"transition {transition_id}: no answer in {timeout} s"
            now = self.state(max(deadline - time.monotonic(), 1.0))
            if now == self.GOAL[transition_id]:
                return True  # done, its response lost
            if now == start:  # the request lost
                self._change.remove_pending_request(future)
                future, sent = self.request(transition_id), sent + 1
        # a resent request that found the transition already made is refused
        return future.result().success or (sent > 1 and self.state() == self.GOAL[transition_id])


def image_msg(bgr: np.ndarray, stamp: int, frame_id: str = "camera_optical_frame",
              encoding: str = "bgr8") -> Image:
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding=encoding,
                step=bgr.shape[1] * (bgr.shape[2] if bgr.ndim == 3 else 1))
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(bgr).tobytes())
    msg.data = data
    return msg


def camera_info_msg(K, width: int, height: int, stamp: int,
                    frame_id: str = "camera_optical_frame") -> CameraInfo:
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.k = [float(v) for v in np.asarray(K).ravel()]
    info.d = [0.0] * 5
    info.header.frame_id = frame_id
    info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp, 10**9)
    return info


def init_rclpy():
    if not rclpy.ok():
        rclpy.init(domain_id=DOMAIN_ID)


def serve_node(log_dir: Path, params: dict):
    """A module fixture's node (``yield from`` it): started with ``params``, stopped cleanly
    at the end (its log in the failure)."""
    init_rclpy()
    process = NodeProcess(log_dir / "node.log", params)
    yield process
    assert process.stop() == 0, process.log()


def publish_rounds(send_round, condition, timeout: float, what: str,
                   period: float = 0.3) -> None:
    """``send_round()`` (one frame per camera) every ``period`` s until ``condition()``
    holds; fails naming ``what`` after ``timeout`` s (the node drops frames that wait, so
    a fixed number sent proves nothing)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        send_round()
        time.sleep(period)


def camera_parameters(poses: dict[str, tuple[float, ...]]) -> dict[str, str]:
    """The ``cameras`` and ``camera_poses`` node parameters of ``poses`` (camera name ->
    x, y, z, roll, pitch, yaw), in order."""
    flat = ",".join(f"{v:.6f}" for pose in poses.values() for v in pose)
    return {"cameras": f"[{','.join(poses)}]", "camera_poses": f"[{flat}]"}


def wait_serving_cameras(node: NodeProcess, probe: Node, image_pubs, timeout: float = 180) -> None:
    """Until ``node`` subscribes to every publisher of ``image_pubs`` (one per camera) and
    publishes the fused grid."""
    ready = wait_for(lambda: not node.alive() or all(
        pub.get_subscription_count() > 0 for pub in image_pubs)
        and probe.count_publishers("fused/drivable/grid") > 0, timeout)
    assert ready and node.alive(), f"node did not come up:\n{node.log()}"
    time.sleep(0.5)  # let its publishers match our subscriptions


class _SpinThread(threading.Thread):
    """Spins an executor until :meth:`stop`: the loop ends between two waits, so the
    executor is shut down only once no thread is inside it (rclpy's shutdown while another
    thread spins can leave that thread using a destroyed guard condition)."""

    def __init__(self, executor: SingleThreadedExecutor):
        super().__init__(daemon=True)
        self._executor = executor
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set() and self._executor.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.join(timeout=timeout)


def spin_in_background(node: Node) -> tuple[SingleThreadedExecutor, _SpinThread]:
    """Spins ``node`` in a daemon thread; :func:`close_spinning` stops it."""
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    thread = _SpinThread(executor)
    thread.start()
    return executor, thread


def close_spinning(node: Node, executor: SingleThreadedExecutor, thread: _SpinThread) -> None:
    """Stops ``executor``'s spin thread, then shuts the executor down and destroys ``node``.
    A node destroyed while the spin thread still holds it in its wait is destroyed later by
    that thread, holding the GIL, inside Fast DDS' participant teardown, which waits for its
    listener threads, which wait for the GIL: a hang seen in a test teardown."""
    thread.stop()
    executor.shutdown()
    node.destroy_node()
