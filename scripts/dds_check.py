#!/usr/bin/env python3
"""What reaches a subscriber of hybridnets_node, under each DDS setting, and how reliably a
restarted node is discovered. Run with the project's venv (.venv/bin/python).

  dds_check.py table [--settings a,b] [--json FILE]
      one node + one probe per setting; a 1280x720 frame and its CameraInfo every 2 s; prints
      when the first detections, grids and masks arrived (seconds after the first frame)
  dds_check.py stress [--cycles 30] [--setting profile] [--no-load]
      start node -> probe discovers it -> stop (every third one SIGKILLed), while another DDS
      graph streams images on a second domain and a busy process loads one core; prints the
      discovery time of each cycle (from the node's "active" log line)
  dds_check.py stock [--sizes 720p,1080p,4k] [--rates 10,30] [--seconds 5] [--json FILE]
      a camera process (a plain rclpy publisher, bgr8 frames at a rate) -> a subscriber
      process with the node's DDS set-up, before (config/fastdds.xml) and after
      (config/fastdds_node.xml) issue 32; the camera with nothing set ("stock") or with
      config/fastdds.xml ("profiled"), best effort or reliable; prints the fraction of frames
      the subscriber's callback received, DDS' lost count and the subscriber's CPU time;
      --receiver node: the node itself (its frames_received) instead of the subscriber

Settings (every process of the graph uses the same one, as a user's shell would):
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NEUTRAL = ("FASTDDS_BUILTIN_TRANSPORTS", "FASTDDS_DEFAULT_PROFILES_FILE",
           "FASTRTPS_DEFAULT_PROFILES_FILE", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY")
SETTINGS = {
    # "profile": nothing set, so the node uses config/fastdds_node.xml and this probe, as
    # configure_dds does, config/fastdds.xml; the others are what users were told to set
    # before.
    "profile": {},
    "profile+localhost": {"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "profile+localhost_only": {"ROS_LOCALHOST_ONLY": "1",
                               "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "large_data": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"},
    "large_data+localhost": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
                             "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "large_data+localhost_only": {"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA",
                                  "ROS_LOCALHOST_ONLY": "1",
                                  "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
    "default_transports+localhost_only": {"FASTDDS_BUILTIN_TRANSPORTS": "DEFAULT",
                                          "ROS_LOCALHOST_ONLY": "1",
                                          "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
}
__doc__ += "".join(f"  {name}: {env or 'nothing set'}\n" for name, env in SETTINGS.items())
TOPICS = ("detections", "drivable/grid", "lane/grid", "drivable/mask", "lane/mask")


def setting_env(name: str, domain: int) -> dict[str, str]:
    """This process's environment for setting ``name`` (the profile applied as the node
    applies it, so the probe is configured like any process of the user's graph)."""
    from hybridnets_ros.ros.dds import configure_dds
    env = {k: v for k, v in os.environ.items() if k not in NEUTRAL}
    env.update(SETTINGS[name], ROS_DOMAIN_ID=str(domain))
    env.setdefault("HYBRIDNETS_CACHE", str(Path(tempfile.gettempdir()) / "dds_check_cache"))
    configure_dds(env)
    return env


def node_process(env: dict, log_path: Path, params: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "hybridnets_ros.ros.node", "--ros-args",
            "--params-file", str(REPO / "config" / "hybridnets.yaml"),
            "-p", "allow_random_weights:=true"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return subprocess.Popen(args, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)


class Probe:
    """A camera (image + CameraInfo publisher) and a subscriber of the node's outputs, with
    the sensor-data QoS a planner or viewer might use."""

    def __init__(self):
        import rclpy
        from nav_msgs.msg import OccupancyGrid
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo, Image
        from vision_msgs.msg import Detection2DArray

        from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
        rclpy.init()
        self.rclpy = rclpy
        self.node = rclpy.create_node("dds_check_probe")
        qos = qos_profile_sensor_data
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.first: dict[str, float] = {}
        types = {"detections": Detection2DArray, "drivable/grid": OccupancyGrid,
                 "lane/grid": OccupancyGrid, "drivable/mask": Image, "lane/mask": Image}
        for topic in TOPICS:
            self.node.create_subscription(types[topic], topic, self._arrived(topic), qos)
        camera = default_camera()
        bgr = SyntheticRoad(camera).render(0.0)[0]
        self.image = Image(height=720, width=1280, encoding="bgr8", step=3840,
                           data=bgr.tobytes())
        self.image.header.frame_id = "camera_optical_frame"
        self.info = CameraInfo(width=1280, height=720, distortion_model="plumb_bob",
                               k=[float(v) for v in camera.K.ravel()], d=[0.0] * 5)
        self.info.header.frame_id = "camera_optical_frame"

    def _arrived(self, topic):
        def callback(_msg):
            self.first.setdefault(topic, time.monotonic())
        return callback

    def spin(self, seconds: float, until=lambda: False) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        return until()

    def node_seen(self) -> bool:
        return self.image_pub.get_subscription_count() > 0

    def publish_frame(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        self.image.header.stamp = self.info.header.stamp = stamp
        self.info_pub.publish(self.info)
        self.image_pub.publish(self.image)

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def stop(node: subprocess.Popen, timeout: float) -> None:
    """Ctrl-C the node as launch does; kill it if it has not exited within ``timeout``."""
    node.send_signal(signal.SIGINT)
    try:
        node.wait(timeout)
    except subprocess.TimeoutExpired:
        node.kill()


def active_at(log_path: Path, started: float) -> float | None:
    """Seconds after ``started`` (monotonic) at which the node logged "active" (its log
    stamps are wall-clock; converted with the current offset)."""
    match = re.search(r"\[(\d+\.\d+)\] \[[^]]*\]: active:", log_path.read_text())
    if not match:
        return None
    return float(match.group(1)) - (time.time() - time.monotonic()) - started


# ----------------------------------------------------------------------------- table
def measure_setting(name: str, period: float, timeout: float, backend: str) -> dict:
    """Runs in its own process: the DDS environment must be set before rclpy starts."""
    domain = 150 + list(SETTINGS).index(name)
    env = setting_env(name, domain)
    os.environ.clear()
    os.environ.update(env)
    log_path = Path(tempfile.mkdtemp(prefix="dds_check_")) / "node.log"
    node = node_process(dict(os.environ), log_path, {"backend": backend})
    probe = Probe()
    row: dict = {"setting": name}
    try:
        started = time.monotonic()
        if not probe.spin(180, probe.node_seen):
            return {**row, "error": f"node not discovered in 180 s (log {log_path})"}
        row["discovered_s"] = round(time.monotonic() - started, 1)
        first_frame = time.monotonic()
        next_frame = first_frame
        while time.monotonic() - first_frame < timeout and len(probe.first) < len(TOPICS):
            if time.monotonic() >= next_frame:
                probe.publish_frame()
                next_frame += period
            probe.spin(0.05)
        row.update({topic: (round(probe.first[topic] - first_frame, 1)
                            if topic in probe.first else None) for topic in TOPICS})
        return row
    finally:
        stop(node, 10)
        probe.close()


def table(settings: list[str], period: float, timeout: float, backend: str,
          json_path: str | None) -> int:
    rows = []
    context = multiprocessing.get_context("spawn")
    for name in settings:
        with context.Pool(1) as pool:
            row = pool.apply(measure_setting, (name, period, timeout, backend))
        rows.append(row)
        cells = [f"{row[t]:.1f} s" if row.get(t) is not None else "never" for t in TOPICS]
        print(f"| {name} | {row.get('discovered_s', '-')} s | " + " | ".join(cells) + " |"
              + (f" {row['error']}" if "error" in row else ""), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return 0 if all(row.get(t) is not None for row in rows for t in TOPICS) else 1


# ---------------------------------------------------------------------------- stress
def busy_core(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def other_graph(setting: str, domain: int, seconds: float) -> None:
    """Another DDS graph on another domain: 1280x720 images at 10 Hz, published and received."""
    env = setting_env(setting, domain)
    os.environ.clear()
    os.environ.update(env)
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("dds_check_other_graph")
    pub = node.create_publisher(Image, "other/image", qos_profile_sensor_data)
    node.create_subscription(Image, "other/image", lambda _m: None, qos_profile_sensor_data)
    msg = Image(height=720, width=1280, encoding="bgr8", step=3840, data=bytes(720 * 3840))
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and rclpy.ok():
            pub.publish(msg)
            rclpy.spin_once(node, timeout_sec=0.1)
    except Exception:  # terminated at the end of the run: rclpy shut down under the loop
        pass
    rclpy.try_shutdown()


def stress(cycles: int, setting: str, load: bool, limit: float) -> int:
    domain = 170
    env = setting_env(setting, domain)
    os.environ.clear()
    os.environ.update(env)
    context = multiprocessing.get_context("spawn")
    helpers = []
    if load:
        helpers = [context.Process(target=busy_core, args=(cycles * 60.0,), daemon=True),
                   context.Process(target=other_graph, args=(setting, domain + 1, cycles * 60.0),
                                   daemon=True)]
        for helper in helpers:
            helper.start()
    probe = Probe()
    times, failed = [], 0
    folder = Path(tempfile.mkdtemp(prefix="dds_stress_"))
    try:
        for cycle in range(cycles):
            log_path = folder / f"node_{cycle}.log"
            started = time.monotonic()
            node = node_process(dict(os.environ), log_path, {"backend": "onnxruntime"})
            came_up = probe.spin(180, lambda: active_at(log_path, started) is not None
                                 or node.poll() is not None)
            active = active_at(log_path, started)
            if not came_up or active is None:
                failed += 1
                print(f"cycle {cycle + 1:2d}: the node did not become active (log {log_path})",
                      flush=True)
            elif probe.spin(limit, probe.node_seen):
                discovery = max(0.0, time.monotonic() - started - active)
                times.append(discovery)
                print(f"cycle {cycle + 1:2d}: active {active:5.1f} s after start, discovered "
                      f"{discovery:4.1f} s later", flush=True)
            else:
                failed += 1
                print(f"cycle {cycle + 1:2d}: NOT discovered within {limit:.0f} s of 'active' "
                      f"(node log {log_path})", flush=True)
            kill = cycle % 3 == 2
            node.send_signal(signal.SIGKILL if kill else signal.SIGINT)
            try:
                node.wait(20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
            # the next node must not be confused with this one's lingering endpoints
            probe.spin(30, lambda: not probe.node_seen())
    finally:
        probe.close()
        for helper in helpers:
            helper.terminate()
    if times:
        print(f"{setting}: {len(times)} of {cycles} cycles discovered; discovery after "
              f"'active': median {sorted(times)[len(times) // 2]:.1f} s, slowest "
              f"{max(times):.1f} s")
    return 1 if failed else 0


# ----------------------------------------------------------------------------- stock
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4k": (3840, 2160)}
# The node's DDS profile before issue 32 (what other processes still use) and after it.
NODE_SIDES = {"before": "config/fastdds.xml", "after": "config/fastdds_node.xml"}
DRIVERS = {"stock": None, "profiled": "config/fastdds.xml"}
# (the camera's QoS, the node's): the node subscribes best effort unless reliable_qos:=true.
QOS = {"best_effort": ("sensor_data", "sensor_data"), "reliable": ("reliable", "sensor_data"),
       "reliable_qos": ("reliable", "reliable")}


def _qos(name: str):
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    if name == "sensor_data":
        return qos_profile_sensor_data
    if name == "reliable":  # a driver's default: reliable, keep last 10
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,  # the node's reliable_qos
                      history=HistoryPolicy.KEEP_LAST)


def _stdin_event():
    """An Event set when a line arrives on stdin (the orchestrator's go or stop)."""
    import threading
    event = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), event.set()), daemon=True).start()
    return event


def camera_process(width: int, height: int, rate: float, seconds: float, qos: str) -> None:
    """A plain rclpy camera: prints "matched" once the subscriber is seen, publishes after a
    line on stdin, then prints what it sent."""
    import rclpy
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("stock_camera")
    pub = node.create_publisher(Image, "image", _qos(qos))
    msg = Image(height=height, width=width, encoding="bgr8", step=width * 3,
                data=bytes(width * height * 3))
    msg.header.frame_id = "camera_optical_frame"
    go = _stdin_event()
    while pub.get_subscription_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("matched", flush=True)
    go.wait()
    count = round(seconds * rate)
    started = time.monotonic()
    for i in range(count):
        time.sleep(max(0.0, started + i / rate - time.monotonic()))
        msg.header.stamp = node.get_clock().now().to_msg()
        pub.publish(msg)
    sent_s = time.monotonic() - started
    time.sleep(1.0)  # the last frames' fragments and repairs
    print(json.dumps({"sent": count,
                      "send_rate_hz": round((count - 1) / max(sent_s, 1e-9), 1)}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def _fastdds_library() -> str:
    """The Fast DDS library this process loaded (its file name carries the version)."""
    return ",".join(sorted(set(re.findall(r"lib(?:fastdds|fastrtps)\.so[.\d]*",
                                          Path("/proc/self/maps").read_text()))))


def receiver_process(qos: str) -> None:
    """A subscriber as the node's image subscription is (QoS, lost-sample event): prints
    "matched" once the camera is seen; after a line on stdin, what its callback received."""
    import resource

    import rclpy
    from rclpy.event_handler import SubscriptionEventCallbacks
    from sensor_msgs.msg import Image
    rclpy.init()
    node = rclpy.create_node("node_like_receiver")
    received, lost = [0], [0]

    def on_image(_msg):
        received[0] += 1

    def on_lost(info):
        lost[0] = info.total_count
    sub = node.create_subscription(Image, "image", on_image, _qos(qos), event_callbacks=(
        SubscriptionEventCallbacks(message_lost=on_lost)))
    stop = _stdin_event()
    while sub.get_publisher_count() == 0:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("matched", flush=True)
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    while not stop.is_set():
        rclpy.spin_once(node, timeout_sec=0.05)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"received": received[0], "lost": lost[0],
                      "cpu_s": round(cpu1.ru_utime + cpu1.ru_stime
                                     - cpu0.ru_utime - cpu0.ru_stime, 2),
                      "library": _fastdds_library()}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()


def node_receiver_process(qos: str, side: str) -> None:
    """The real node as the receiver (random weights, nobody subscribing to its outputs, so
    it runs no network): prints "matched" once its /diagnostics count a publisher on its image
    topic; after a line on stdin, the frames its image callback received (frames_received)
    and DDS' lost count (frames_lost_in_transport)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    folder = Path(tempfile.mkdtemp(prefix="dds_check_"))
    env = dict(os.environ)
    if side == "before":  # as a profile of the user's own (renamed), which the node keeps
        own = folder / "fastdds_before.xml"
        own.write_text((REPO / NODE_SIDES["before"]).read_text().replace(
            'profile_name="hybridnets_large_messages"', 'profile_name="before_issue_32"'))
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(own)
    node = node_process(env, folder / "node.log",
                        {"backend": "torch", "reliable_qos": str(qos == "reliable").lower()})
    from hybridnets_ros.ros.dds import configure_dds
    configure_dds()  # this process: as the project's probes
    rclpy.init()
    listener = rclpy.create_node("dds_check_diagnostics")
    values: dict = {}

    def on_diag(msg):
        for status in msg.status:
            kv = {item.key: item.value for item in status.values}
            if (status.name == "hybridnets_node: perception"
                    and kv.get("node") == "/hybridnets_node"):
                values.update(kv, at=time.monotonic())
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    stop = _stdin_event()

    def cpu_s() -> float:
        fields = Path(f"/proc/{node.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        while (int(values.get("image_publishers", 0)) == 0 and node.poll() is None
               and not stop.is_set()):
            rclpy.spin_once(listener, timeout_sec=0.1)
        if node.poll() is not None or stop.is_set():
            print(f"node exited or not matched (log {folder})", flush=True)
            return
        print("matched", flush=True)
        base, cpu0 = int(values["frames_received"]), cpu_s()
        while not stop.is_set():
            rclpy.spin_once(listener, timeout_sec=0.1)
        stopped = time.monotonic()
        while values["at"] < stopped + 1.0 and time.monotonic() < stopped + 10:
            rclpy.spin_once(listener, timeout_sec=0.1)
        print(json.dumps({"received": int(values["frames_received"]) - base,
                          "lost": int(values["frames_lost_in_transport"]),
                          "cpu_s": round(cpu_s() - cpu0, 2), "library": _fastdds_library()}),
              flush=True)
    finally:
        stop(node, 20)
        listener.destroy_node()
        rclpy.try_shutdown()


def _read_line(proc: subprocess.Popen, deadline: float) -> str | None:
    """The next line of ``proc``'s stdout, or None at ``deadline`` or its end."""
    import selectors
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.2):
                return proc.stdout.readline().strip() or None
    return None


def stock_case(size: str, rate: float, driver: str, qos: str, side: str, seconds: float,
               domain: int, receiver_kind: str = "subscriber") -> dict:
    """One camera process -> one node-like subscriber process (or the node); the received
    fraction."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FASTDDS_", "FASTRTPS_")) and k not in NEUTRAL}
    env.update(ROS_DOMAIN_ID=str(domain), PYTHONPATH=str(REPO))
    camera_env, receiver_env = dict(env), dict(env)
    if DRIVERS[driver]:
        camera_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / DRIVERS[driver])
    width, height = SIZES[size]
    camera_qos, node_qos = QOS[qos]
    script = str(Path(__file__).resolve())
    row = {"size": size, "rate_hz": rate, "driver": driver, "qos": qos, "node": side,
           "receiver": receiver_kind}
    if receiver_kind == "node":
        receiver_args = ["_node_receiver", node_qos, side]
    else:
        receiver_args = ["_receiver", node_qos]
        receiver_env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / NODE_SIDES[side])
    procs = [subprocess.Popen([sys.executable, script, *receiver_args], env=receiver_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, script, "_camera", str(width), str(height),
                               str(rate), str(seconds), camera_qos], env=camera_env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)]
    receiver, camera = procs
    try:
        deadline = time.monotonic() + 300  # the node loads its model first
        if not all(_read_line(p, deadline) == "matched" for p in procs):
            return {**row, "error": "not matched in 300 s"}
        time.sleep(1.0)  # both sides know each other
        camera.stdin.write("go\n")
        camera.stdin.flush()
        sent = _read_line(camera, time.monotonic() + seconds * 4 + 60)
        receiver.stdin.write("stop\n")
        receiver.stdin.flush()
        got = _read_line(receiver, time.monotonic() + 60)
        if sent is None or got is None:
            return {**row, "error": "no report"}
        row.update(json.loads(sent), **json.loads(got))
        row["fraction"] = round(row["received"] / row["sent"], 3)
        row["load_1min"] = round(os.getloadavg()[0], 2)
        return row
    finally:
        for proc in procs:  # end of input: each returns (the node receiver stops its node)
            with contextlib.suppress(OSError):
                proc.stdin.close()
        for proc in procs:
            try:  # killed, the node receiver would leave its node running
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def stock(sizes: list[str], rates: list[float], drivers: list[str], qos_names: list[str],
          sides: list[str], seconds: float, json_path: str | None,
          receiver_kind: str = "subscriber") -> int:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               "unknown CPU")
    rmem = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    print(f"{cpu}, {os.cpu_count()} cores; net.core.rmem_max {rmem}; {seconds:g} s per case; "
          f"load average at start {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    cases = [(size, rate, qos, driver, side) for size in sizes for rate in rates
             for qos in qos_names for driver in drivers for side in sides]
    for index, (size, rate, qos, driver, side) in enumerate(cases):
        row = stock_case(size, rate, driver, qos, side, seconds, 180 + index % 40, receiver_kind)
        rows.append(row)
        print(json.dumps(row), flush=True)
    library = next((row["library"] for row in rows if row.get("library")), "?")
    print(f"\nFast DDS library: {library}; load average at the end "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| frames | driver QoS -> node QoS | driver | " + " | ".join(
        f"node {side}" for side in sides) + " |")
    print("|---" * (3 + len(sides)) + "|")
    for size in sizes:
        for rate in rates:
            for qos in qos_names:
                for driver in drivers:
                    cells = []
                    for side in sides:
                        row = next(r for r in rows if (r["size"], r["rate_hz"], r["qos"],
                                                       r["driver"], r["node"])
                                   == (size, rate, qos, driver, side))
                        cells.append(f"{row['received']}/{row['sent']}" if "error" not in row
                                     else row["error"])
                    camera_qos, node_qos = QOS[qos]
                    print(f"| {size} {rate:g} Hz | {camera_qos} -> {node_qos} | {driver} | "
                          + " | ".join(cells) + " |")
    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in row for row in rows) else 0


def main() -> int:
    if sys.argv[1:2] == ["_camera"]:  # the processes of `stock`
        w, h, rate, seconds, qos = sys.argv[2:7]
        return camera_process(int(w), int(h), float(rate), float(seconds), qos) or 0
    if sys.argv[1:2] == ["_receiver"]:
        return receiver_process(sys.argv[2]) or 0
    if sys.argv[1:2] == ["_node_receiver"]:
        return node_receiver_process(sys.argv[2], sys.argv[3]) or 0
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table")
    t.add_argument("--settings", default=",".join(SETTINGS))
    t.add_argument("--period", type=float, default=2.0)
    t.add_argument("--timeout", type=float, default=60.0, help="per setting, after the first frame")
    t.add_argument("--backend", default="torch", help="the node's (torch starts fastest)")
    t.add_argument("--json")
    s = sub.add_parser("stress")
    s.add_argument("--cycles", type=int, default=30)
    s.add_argument("--setting", default="profile", choices=SETTINGS)
    s.add_argument("--no-load", action="store_true")
    s.add_argument("--limit", type=float, default=60.0,
                   help="seconds after the node's 'active' to wait for discovery")
    k = sub.add_parser("stock")
    k.add_argument("--sizes", default=",".join(SIZES), help=f"of {', '.join(SIZES)}")
    k.add_argument("--rates", default="10,30", help="frames per second")
    k.add_argument("--drivers", default=",".join(DRIVERS))
    k.add_argument("--qos", default=",".join(QOS), help=f"of {', '.join(QOS)}")
    k.add_argument("--sides", default=",".join(NODE_SIDES))
    k.add_argument("--seconds", type=float, default=5.0, help="of frames per case")
    k.add_argument("--receiver", choices=("subscriber", "node"), default="subscriber",
                   help="a subscriber set up as the node's participant, or the node itself "
                        "(frames_received in its /diagnostics; it starts per case)")
    k.add_argument("--json")
    args = parser.parse_args()
    if args.command == "stock":
        return stock(args.sizes.split(","), [float(r) for r in args.rates.split(",")],
                     args.drivers.split(","), args.qos.split(","), args.sides.split(","),
                     args.seconds, args.json, args.receiver)
    if args.command == "table":
        unknown = set(args.settings.split(",")) - set(SETTINGS)
        if unknown:
            parser.error(f"unknown setting(s) {', '.join(sorted(unknown))}; choose from "
                         f"{', '.join(SETTINGS)}")
        print("| setting | discovered | " + " | ".join(TOPICS) + " |")
        print("|---" * (len(TOPICS) + 2) + "|")
        return table(args.settings.split(","), args.period, args.timeout, args.backend,
                     args.json)
    return stress(args.cycles, args.setting, not args.no_load, args.limit)


if __name__ == "__main__":
    sys.exit(main())
