"""``hybridnets bench --graph``: the node's speed as a ROS node in a graph, measured the way
NVIDIA's ros2_benchmark measures the graphs behind Isaac ROS's published figures.

Three processes over real DDS, in a namespace of their own: ``hybridnets_node`` (the real
node, started as users start it: the shipped parameters, its own DDS set-up), a *player*
publishing a fixed sequence of frames, preloaded as messages, with their CameraInfo at a
fixed rate (each image stamped as it is published), and a *recorder* subscribed to every
output a planner uses (``planner_outputs``), noting each message's arrival on the same
host's clock. This process only steers them (one JSON line per command and answer) and
computes the results.

- **Throughput**: the highest input rate at which every output topic received more than
  95 % of the frames published (``DROP_LIMIT``). The node keeps only the newest frame, so
  above its own rate it drops frames on purpose: exactly what the rule counts. The rate is
  searched (``search_throughput``): from the rate the warm-up's outputs came at, doubling or
  halving until one rate passes and another fails, then bisecting that interval
  geometrically down to ``RESOLUTION``.
- **Latency** at fixed input rates (10 and 30 Hz by default): from the image's header stamp
  to each output's arrival at the recorder, median, p95 and max per output topic, beside
  how many frames each topic received.

The warm-up (model load, engine build, first frames, then ``WARMUP_S`` at the highest fixed
rate) is not measured; after every probe the graph drains (the last frame's outputs arrive,
or ``DRAIN_S`` passes) before the next one. The input is identified by the sha256 of the
frames' pixels. Each backend and DDS setting is one run with a fresh node: ``shipped``,
the player and the recorder with the project's Fast DDS profile (as the project's
commands set it); ``stock``, both without any Fast DDS setting, as a camera driver or a
viewer a user starts. The node configures itself in both.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import math
import os
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PROTOCOL = "@bench "  # prefix of the children's answers on stdout (libraries may print too)
DROP_LIMIT = 0.05     # a rate is sustained when every topic lost under 5 % of the frames
MIN_RATE, MAX_RATE = 0.25, 120.0  # Hz, the search's bounds
RESOLUTION = 0.10     # the search stops when the failing rate is within 10 % of the passing one
WARMUP_S = 3.0        # s of frames at the highest fixed rate before anything is measured
DRAIN_S = 5.0         # s after a probe's last frame to wait for its outputs (ros2_benchmark's)
READY_TIMEOUT_S = 300.0   # the node's start (model load, engine build at configure) under load
FIRST_RESULT_TIMEOUT_S = 120.0
DDS_SETTINGS = ("shipped", "stock")
NODE_COUNTERS = ("frames_received", "frames_processed", "frames_dropped")  # its /diagnostics
FASTDDS_PREFIXES = ("FASTDDS_", "FASTRTPS_")


# ------------------------------------------------------------------ the measurement's logic

def input_hash(frames: Iterable[np.ndarray]) -> str:
    """sha256 of the frames as published: each one's shape, then its pixels, in order."""
    digest = hashlib.sha256()
    for frame in frames:
        digest.update("x".join(map(str, frame.shape)).encode() + b";")
        digest.update(np.ascontiguousarray(frame).data)
    return digest.hexdigest()


def latency_stats(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return {"median": None, "p95": None, "max": None}
    values = np.asarray(latencies_ms)
    return {"median": round(float(np.median(values)), 1),
            "p95": round(float(np.percentile(values, 95)), 1),
            "max": round(float(values.max()), 1)}


def probe_result(rate_hz: float, stamps: list[int], arrivals: Mapping[int, Mapping[str, int]],
                 topics: Iterable[str], playback_rate_hz: float | None) -> dict:
    """One fixed-rate probe: ``stamps`` the images published (ns), ``arrivals`` stamp ->
    {topic: arrival ns}. Per topic the frames received and dropped, the rate outputs came
    at and the latencies; ``sustained`` by the drop rule on every topic."""
    published = len(stamps)
    per_topic = {}
    for topic in topics:
        got = sorted((arrivals[s][topic], s) for s in stamps if topic in arrivals.get(s, {}))
        received = len(got)
        span_s = (got[-1][0] - got[0][0]) / 1e9 if received > 1 else 0.0
        per_topic[topic] = {
            "received": received, "dropped": published - received,
            "drop_fraction": round((published - received) / published, 4) if published else None,
            "output_rate_hz": round((received - 1) / span_s, 2) if span_s > 0 else None,
            "latency_ms": latency_stats([(arrival - stamp) / 1e6 for arrival, stamp in got])}
    return {"rate_hz": rate_hz, "published": published,
            "playback_rate_hz": None if playback_rate_hz is None else round(playback_rate_hz, 2),
            "sustained": published > 0 and all(t["dropped"] < DROP_LIMIT * published
                                               for t in per_topic.values()),
            "topics": per_topic}


def serialized_stamp_ns(data: bytes) -> int:
    """The header stamp of a serialized message whose first field is a std_msgs/Header
    (every output the recorder takes): CDR's 4-byte encapsulation (its second byte 1 for
    little endian), then stamp.sec (int32) and stamp.nanosec (uint32). Read so, as
    ros2_benchmark's monitor reads it, the recorder never deserializes a message."""
    sec, nanosec = struct.unpack_from("<iI" if data[1] & 1 else ">iI", data, 4)
    return sec * 10**9 + nanosec


def _nice(rate: float) -> float:
    return float(f"{rate:.3g}")


def search_throughput(sustained: Callable[[float], bool], guess: float, low: float = MIN_RATE,
                      high: float = MAX_RATE, resolution: float = RESOLUTION
                      ) -> tuple[float | None, float | None]:
    """(the highest rate found sustained, the lowest found not) by probing ``sustained``:
    from ``guess``, doubling while it passes or halving while it fails, within [low, high];
    then the geometric middle of the two until they are within ``resolution``. None: no
    rate passed (or failed) within the bounds."""
    passed = failed = None
    rate = _nice(min(max(guess, low), high))
    while True:
        if sustained(rate):
            passed = rate
            if failed is not None or rate >= high:
                break
            rate = _nice(min(rate * 2, high))
        else:
            failed = rate
            if passed is not None or rate <= low:
                break
            rate = _nice(max(rate / 2, low))
    while passed is not None and failed is not None and failed > passed * (1 + resolution):
        rate = _nice(math.sqrt(passed * failed))
        if not passed < rate < failed:
            break
        if sustained(rate):
            passed = rate
        else:
            failed = rate
    return passed, failed


def dds_environment(setting: str, base: Mapping[str, str]) -> tuple[dict[str, str], str]:
    """The player's and recorder's environment for ``setting`` and what it means: no Fast
    DDS variable of ``base`` is kept, so that both settings mean the same everywhere;
    ``shipped`` then adds the project's profile as configure_dds does for every command."""
    from ..ros.dds import configure_dds

    if setting not in DDS_SETTINGS:
        raise ValueError(f"unknown DDS setting {setting!r}; choose from {', '.join(DDS_SETTINGS)}")
    env = {k: v for k, v in base.items() if not k.startswith(FASTDDS_PREFIXES)}
    if setting == "stock":
        return env, "player and recorder without any Fast DDS setting (stock)"
    return env, "; ".join(message for _, message in configure_dds(env))


# --------------------------------------------------------------- the player and the recorder

def _answer(obj) -> None:
    sys.stdout.write(PROTOCOL + json.dumps(obj) + "\n")
    sys.stdout.flush()


def _serve(handlers: dict[str, Callable[..., object]]) -> None:
    """Answers one JSON command per stdin line until "quit" or the end of stdin."""
    for line in sys.stdin:
        request = json.loads(line)
        command = request.pop("cmd")
        if command == "quit":
            break
        _answer(handlers[command](**request))


def _run_player(args) -> None:
    import rclpy
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from ..ros import messages
    from .player import FramePlayer

    with np.load(args.frames) as data:
        frames = [data[name] for name in data.files]
    info = deserialize_message(Path(args.camera_info).read_bytes(), CameraInfo)
    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{args.namespace}"])
    player = FramePlayer(camera_info=info, name="hybridnets_bench_player")
    # Preloaded, as ros2_benchmark's playback node buffers them: publishing costs no conversion.
    prepared = [messages.image(Header(), frame, "bgr8") for frame in frames]

    def play(rate: float, count: int, start: int = 0) -> dict:
        stamps, sent = [], []
        begin = time.monotonic()
        for k in range(count):
            delay = begin + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame = player.publish_message(start + k, prepared[(start + k) % len(prepared)],
                                           record=False)
            stamps.append(frame.stamp_ns)
            sent.append(frame.wall_time)
        span = sent[-1] - sent[0] if count > 1 else 0.0
        return {"stamps": stamps, "playback_rate_hz": (count - 1) / span if span > 0 else None}

    _serve({"status": lambda: {"subscribers": player.image_pub.get_subscription_count()},
            "play": play})
    player.destroy_node()
    rclpy.try_shutdown()


def _run_recorder(args) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from ..ros.messages import stamp_ns
    from ..ros.outputs import OUTPUTS
    from .recorder import RECORDER_QOS

    rclpy.init(args=["--ros-args", "-r", f"__ns:=/{args.namespace}"])
    node = Node("hybridnets_bench_recorder")
    types = {o.topic: o.msg_type for o in OUTPUTS}
    topics = args.topics.split(",")
    lock = threading.Lock()
    records: list[tuple[str, int, int]] = []  # (topic, image stamp, arrival), taken per probe
    diagnostics: dict = {}
    target = f"/{args.namespace}/hybridnets_node"
    clock = node.get_clock()  # the player's clock: system time, the same host

    def note(topic: str):
        def callback(data: bytes) -> None:
            arrival = clock.now().nanoseconds
            with lock:
                records.append((topic, serialized_stamp_ns(data), arrival))
        return callback

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if status.name.endswith("hybridnets_node: perception") and values.get("node") == target:
                with lock:
                    diagnostics.clear()
                    diagnostics.update(stamp_ns=stamp_ns(msg.header), message=status.message,
                                       values=values)

    for topic in topics:
        node.create_subscription(types[topic], topic, note(topic), RECORDER_QOS, raw=True)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set() and executor.context.ok():
            executor.spin_once(timeout_sec=0.05)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()

    def take() -> dict:
        with lock:
            taken, records[:] = list(records), []
        return {"records": taken}

    def latest_diagnostics() -> dict:
        with lock:
            return dict(diagnostics)

    _serve({"status": lambda: {"publishers": {t: node.count_publishers(t) for t in topics}},
            "take": take, "diagnostics": latest_diagnostics})
    stop.set()
    spinner.join(timeout=10)
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()


# --------------------------------------------------------------------- steering the graph

class _Child:
    """A player or recorder process: a JSON command per line to its stdin, its answers
    read from stdout by a thread (so that waiting for one can time out)."""

    def __init__(self, role: str, args: list[str], env: dict, log_path: Path):
        self.role, self.log_path = role, log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", __name__, role, *args], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, bufsize=1)
        self._answers: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL):
                self._answers.put(json.loads(line[len(PROTOCOL):]))
            else:  # a library's own output
                self._log.write(line)
        self._answers.put(None)

    def request(self, command: str, timeout: float, **arguments):
        try:
            self.proc.stdin.write(json.dumps({"cmd": command, **arguments}) + "\n")
            self.proc.stdin.flush()
            answer = self._answers.get(timeout=timeout)
        except (BrokenPipeError, queue.Empty):
            answer = None
        if answer is None:
            state = "exited" if self.proc.poll() is not None else "did not answer"
            raise RuntimeError(f"the bench's {self.role} {state} ({command}):\n"
                               f"{_tail(self.log_path)}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Input:
    """What the player publishes: the frames, their CameraInfo and where they come from."""

    frames: list[np.ndarray]
    camera_info: object  # sensor_msgs/CameraInfo
    source: str
    camera_info_source: str

    @property
    def sha256(self) -> str:
        return input_hash(self.frames)

    def record(self) -> dict:
        sizes = sorted({f"{f.shape[1]}x{f.shape[0]}" for f in self.frames})
        return {"source": self.source, "frames": len(self.frames), "size": ", ".join(sizes),
                "sha256": self.sha256, "camera_info": self.camera_info_source}


def load_input(source: str | None, count: int) -> Input:
    """At most ``count`` distinct frames of ``source`` (a folder of images, a bag; None: the
    built-in synthetic road) with their CameraInfo: the bag's, else config/hybridnets.yaml's
    camera model for their size, as the in-process bench builds its grids."""
    from ..core.synthetic import default_camera
    from ..ros.camera_info import camera_info_from_model
    from .bags import is_bag
    from .bench import load_frames
    from .replay import frames_from_bag

    info, info_source = None, "the bag's"
    if source is not None and is_bag(source):
        info, frames = frames_from_bag(Path(source))
        frames, text = list(itertools.islice(frames, count)), f"bag {source}"
        if not frames:
            raise ValueError(f"no images in {source}")
    else:
        frames, text = load_frames(source, count)
    if info is None:
        height, width = frames[0].shape[:2]
        info = camera_info_from_model(default_camera(width, height), "camera_optical_frame")
        info_source = f"the default camera model of config/hybridnets.yaml at {width}x{height}"
    info.header.frame_id = "camera_optical_frame"
    return Input(frames, info, text, info_source)


class GraphRun:
    """One backend under one DDS setting: the node, the player and the recorder, started
    in a namespace of their own, until :meth:`stop`."""

    def __init__(self, workdir: Path, name: str, node_args: list[str], env: dict,
                 child_env: dict, topics: list[str]):
        self.topics = topics
        self.namespace = f"hybridnets_bench_{os.getpid()}_{name}"
        self.node_log = workdir / f"{name}_node.log"
        self._node_log = open(self.node_log, "w")
        self.node = subprocess.Popen(
            [sys.executable, "-m", "hybridnets_ros.ros.node", "--ros-args", *node_args,
             "-r", f"__ns:=/{self.namespace}"],
            env=env, stdout=self._node_log, stderr=subprocess.STDOUT)
        common = ["--namespace", self.namespace]
        self.player = _Child("player", common + ["--frames", str(workdir / "frames.npz"),
                                                 "--camera-info", str(workdir / "camera_info.cdr")],
                             child_env, workdir / f"{name}_player.log")
        self.recorder = _Child("recorder", common + ["--topics", ",".join(topics)], child_env,
                               workdir / f"{name}_recorder.log")
        self.arrivals: dict[int, dict[str, int]] = {}
        self.next_frame = 0
        self.frame_s = 1.0  # the node's time per frame, estimated by the warm-up
        self.counters: dict[str, int] | None = None  # the node's, after the last probe

    def _check_node(self) -> None:
        if self.node.poll() is not None:
            raise RuntimeError(f"hybridnets_node exited with code {self.node.returncode}:\n"
                               f"{_tail(self.node_log)}")

    def _collect(self) -> None:
        for topic, stamp, arrival in self.recorder.request("take", 30)["records"]:
            self.arrivals.setdefault(stamp, {}).setdefault(topic, arrival)

    def _complete(self, stamp: int) -> bool:
        return len(self.arrivals.get(stamp, ())) == len(self.topics)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the node subscribes to the images and publishes every topic."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_node()
            subscribers = self.player.request("status", 30)["subscribers"]
            publishers = self.recorder.request("status", 30)["publishers"]
            if subscribers and all(publishers.values()):
                return
            if time.monotonic() > deadline:
                missing = [t for t, n in publishers.items() if not n]
                raise RuntimeError(
                    f"hybridnets_node was not ready within {timeout:.0f} s (image subscribers "
                    f"{subscribers}, no publisher of {', '.join(missing) or '-'}):\n"
                    f"{_tail(self.node_log)}")
            time.sleep(0.5)

    def play(self, rate: float, seconds: float) -> dict:
        """Publishes ``seconds`` of frames at ``rate``, waits for the outputs (the last
        frame's, or DRAIN_S), returns probe_result."""
        count = max(2, math.ceil(seconds * rate))
        answer = self.player.request("play", count / rate + 60, rate=rate, count=count,
                                     start=self.next_frame)
        self.next_frame += count
        stamps = answer["stamps"]
        deadline = time.monotonic() + max(DRAIN_S, 3 * self.frame_s)
        while True:
            self._collect()
            if self._complete(stamps[-1]) or time.monotonic() > deadline:
                break
            self._check_node()
            time.sleep(0.1)
        result = probe_result(rate, stamps, self.arrivals, self.topics, answer["playback_rate_hz"])
        self.arrivals.clear()  # later arrivals of these frames belong to no probe
        before, self.counters = self.counters, self.node_counters()
        if before and self.counters:
            # Where the frames went: never reached the node (transport), or reached it and
            # were replaced by a newer one while it was busy (newest frame wins).
            result["node"] = {key: self.counters[key] - before[key] for key in NODE_COUNTERS}
        return result

    def node_counters(self, timeout: float = 5.0) -> dict[str, int] | None:
        """The node's frame counters from its first /diagnostics made from now on (it
        publishes them every second), None if none came within ``timeout``."""
        now, deadline = time.time_ns(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.recorder.request("diagnostics", 30)
            if latest.get("stamp_ns", 0) > now:
                values = latest["values"]
                return {key: int(values[key]) for key in NODE_COUNTERS if key in values} \
                    if all(key in values for key in NODE_COUNTERS) else None
            time.sleep(0.2)
        return None

    def warm_up(self, rate: float, timeout: float = FIRST_RESULT_TIMEOUT_S) -> dict:
        """One frame every 2 s until one has every output (the node works only for the
        subscriptions it has seen, and its side of discovery can lag ours), then WARMUP_S at
        ``rate``: its output rate (or latency) estimates the node's time per frame."""
        deadline = time.monotonic() + timeout
        while True:
            stamp = self.player.request("play", 30, rate=1.0, count=1,
                                        start=self.next_frame)["stamps"][0]
            self.next_frame += 1
            until = time.monotonic() + 2.0
            while time.monotonic() < until and not self._complete(stamp):
                self._collect()
                self._check_node()
                time.sleep(0.1)
            if self._complete(stamp):
                break
            if time.monotonic() > deadline:
                got = sorted({t for topics in self.arrivals.values() for t in topics})
                raise RuntimeError(
                    f"no frame had every output within {timeout:.0f} s of frames sent (outputs "
                    f"seen: {', '.join(got) or 'none'}; under a stock DDS setting the images may "
                    f"not reach the node: docs/dds.md):\n{_tail(self.node_log)}")
        self.frame_s = max((self.arrivals[stamp][t] - stamp) / 1e9 for t in self.topics)
        self.counters = self.node_counters()
        trial = self.play(rate, WARMUP_S)
        first = trial["topics"][self.topics[0]]
        if first["output_rate_hz"]:
            self.frame_s = 1.0 / first["output_rate_hz"]
        elif first["latency_ms"]["median"]:
            self.frame_s = first["latency_ms"]["median"] / 1e3
        return trial

    def diagnostics(self) -> dict:
        """The node's latest /diagnostics status: its message and key/values."""
        latest = self.recorder.request("diagnostics", 30)
        return {"message": latest.get("message"), **latest.get("values", {})}

    def stop(self) -> int | None:
        """Stops the three processes; the node's exit status."""
        for child in (self.player, self.recorder):
            child.stop()
        if self.node.poll() is None:
            self.node.send_signal(signal.SIGINT)
            try:
                self.node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.node.kill()
                self.node.wait()
        self._node_log.close()
        return self.node.returncode


# ------------------------------------------------------------------------ the whole bench

@dataclass(frozen=True)
class GraphOptions:
    rates: tuple[float, ...] = (10.0, 30.0)
    seconds: float = 10.0
    search: bool = True
    dds: tuple[str, ...] = DDS_SETTINGS


def measure(run: GraphRun, options: GraphOptions) -> dict:
    """Warm-up, the throughput search, then the fixed rates, on a started GraphRun."""
    run.wait_ready()
    log.info("bench --graph: node ready; warming up")
    run.warm_up(max(options.rates))
    record: dict = {"throughput_hz": None}
    if options.search:
        probes = []

        def sustained(rate: float) -> bool:
            probes.append(run.play(rate, options.seconds))
            got = probes[-1]
            worst = max(t["drop_fraction"] for t in got["topics"].values())
            log.info("bench --graph: probe %g Hz: %.0f%% dropped (%s)", rate, 100 * worst,
                     "sustained" if got["sustained"] else "not sustained")
            return got["sustained"]
        passed, failed = search_throughput(sustained, 1.0 / run.frame_s)
        record.update(throughput_hz=passed, lowest_failed_hz=failed, probes=probes)
    record["rates"] = {}
    for rate in options.rates:
        log.info("bench --graph: %g Hz for %g s", rate, options.seconds)
        record["rates"][f"{rate:g}"] = run.play(rate, options.seconds)
    return record


def node_arguments(path: Path, overrides: Mapping[str, object]) -> list[str]:
    """The shipped parameter file, then ``path`` written with ``overrides`` (the later
    one wins)."""
    import yaml

    from ..ros.resources import share_file

    values = {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return ["--params-file", str(share_file("config/hybridnets.yaml")),
            "--params-file", str(path)]


def bench_graph(config, base, variants: list[tuple[str, str]], graph_input: Input,
                options: GraphOptions, weights, json_path: str | None = None) -> int:
    """``hybridnets bench --graph``: every (backend, precision) of ``variants`` under every
    DDS setting of ``options``; prints the tables, writes ``json_path``; 0 when every run
    was measured. ``config``: the node's settings (``base``: the shipped ones, only the
    differences are passed on); ``weights``: the checkpoint, None for random weights."""
    from rclpy.serialization import serialize_message

    from ..pipeline.config import settings
    from ..pipeline.factory import resolve_device
    from ..ros.outputs import planner_outputs, supported
    from .bench import machine_info

    planner = planner_outputs(config.adapter)
    topics = [o.topic for o in supported(config.adapter) if o.name in planner]
    sizes = {f.shape[1::-1] for f in graph_input.frames}  # (width, height)
    changes = {f.name: getattr(config, f.name) for f in settings()
               if getattr(config, f.name) != getattr(base, f.name)}
    # The engine built at configure for the frames' size, as a user sets it for the camera
    # (frames of several sizes: at the first frame of each).
    changes.update(weights=str(weights or ""), allow_random_weights=weights is None,
                   camera_resolution=list(next(iter(sizes))) if len(sizes) == 1 else [])
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "mode": "graph", "model": config.model,
           "method": ("ros2_benchmark's: a player publishing preloaded frames at fixed rates, "
                      "the node in its own process, a recorder of every output over DDS; "
                      f"throughput: highest input rate with under {DROP_LIMIT:.0%} of the "
                      "frames dropped on every output topic (searched); latency: image stamp "
                      "to output arrival"),
           "machine": machine_info(resolve_device(config.device)),
           "input": graph_input.record(),
           "settings": {"rates_hz": list(options.rates), "seconds": options.seconds,
                        "search": options.search, "drop_limit": DROP_LIMIT,
                        "search_bounds_hz": [MIN_RATE, MAX_RATE], "search_resolution": RESOLUTION,
                        "warmup_s": WARMUP_S, "drain_s": DRAIN_S, "topics": topics,
                        "weights": str(weights) if weights else "random",
                        "node_parameters": {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in changes.items()}},
           "runs": []}
    doc["machine"]["versions"].update(_ros_versions())
    del doc["machine"]["threads"]  # this process's: the node's are in its engine's description
    ok = True
    with tempfile.TemporaryDirectory(prefix="hybridnets-bench-graph-") as tmp:
        workdir = Path(tmp)
        np.savez(workdir / "frames.npz", *graph_input.frames)
        (workdir / "camera_info.cdr").write_bytes(serialize_message(graph_input.camera_info))
        for (backend, precision), setting in itertools.product(variants, options.dds):
            child_env, dds_note = dds_environment(setting, os.environ)
            label = backend if precision == "fp32" else f"{backend}:{precision}"
            record = {"backend": label, "dds": setting, "dds_note": dds_note,
                      "load_average_start": [round(x, 2) for x in os.getloadavg()]}
            log.info("bench --graph: %s, DDS %s: starting hybridnets_node", label, setting)
            name = str(len(doc["runs"]))
            node_args = node_arguments(workdir / f"{name}_params.yaml",
                                       {**changes, "backend": backend, "precision": precision})
            # The node as users start it: the stock environment, configuring its own DDS.
            node_env, _ = dds_environment("stock", os.environ)
            run = GraphRun(workdir, name, node_args, node_env, child_env, topics)
            try:
                record.update(measure(run, options))
                diagnostics = run.diagnostics()
                record["node_backend"] = diagnostics.get("backend")
                record["node_diagnostics"] = diagnostics
            except RuntimeError as exc:
                ok = False
                record["error"] = str(exc)
                log.error("bench --graph: %s, DDS %s: %s", label, setting, exc)
            finally:
                record["node_exit_code"] = run.stop()
            record["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            ok = ok and record["node_exit_code"] == 0
            doc["runs"].append(record)
    print(format_graph_table(doc))
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {json_path}")
    return 0 if ok else 1


def _ros_versions() -> dict:
    from importlib import metadata
    found = {}
    for name in ("rclpy", "ros-rmw-fastrtps-cpp", "ros-fastdds"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    found["rmw_implementation"] = os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp (default)")
    found["ros_distro"] = os.environ.get("ROS_DISTRO", "")
    return found


def _latency(topic_record: dict) -> str:
    latency = topic_record["latency_ms"]
    if latency["median"] is None:
        return "-"
    return f"{latency['median']:.0f} / {latency['p95']:.0f} / {latency['max']:.0f}"


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _throughput(run: dict) -> str:
    if "probes" not in run:
        return "not searched"
    if run["throughput_hz"] is None:
        return f"< {MIN_RATE:g}"
    return f"{'>= ' if run['lowest_failed_hz'] is None else ''}{run['throughput_hz']:g}"


def _where(probe: dict) -> str:
    """Where a probe's frames went, from the node's counters."""
    text = f"{probe['published']} published"
    if probe["playback_rate_hz"]:
        text += f" at {probe['playback_rate_hz']:g} Hz"
    node = probe.get("node")
    if node:
        text += (f", {node['frames_received']} reached the node, {node['frames_processed']} "
                 f"processed, {node['frames_dropped']} replaced by a newer one while it was busy")
    return text


def format_graph_table(doc: dict) -> str:
    m, source, settings_ = doc["machine"], doc["input"], doc["settings"]
    rates, topics = [f"{r:g}" for r in settings_["rates_hz"]], settings_["topics"]
    lines = [f"hybridnets bench --graph: model {doc['model']}, {source['frames']} distinct "
             f"frames {source['size']} from {source['source']} (sha256 "
             f"{source['sha256'][:16]}...), weights {settings_['weights']}",
             f"machine: {m['cpu']}, {m['cpu_count']} CPUs",
             f"throughput: the highest input rate at which every output topic lost under "
             f"{DROP_LIMIT:.0%} of the frames; latency: image stamp -> arrival at the "
             f"recorder, median / p95 / max ms; {settings_['seconds']:g} s per rate", ""]
    summary = [["backend", "node's engine", "DDS", "throughput Hz"]
               + [f"{topics[0]} @{r} Hz" for r in rates]]
    for run in doc["runs"]:
        row = [run["backend"], run.get("node_backend") or "-", run["dds"]]
        if "error" in run:
            summary.append(row + ["failed"] + ["-"] * len(rates))
            continue
        summary.append(row + [_throughput(run)] + [
            f"{run['rates'][r]['topics'][topics[0]]['received']}/{run['rates'][r]['published']}, "
            f"{_latency(run['rates'][r]['topics'][topics[0]])} ms" for r in rates])
    lines += _columns(summary)
    for run in doc["runs"]:
        lines += ["", f"{run['backend']}, DDS {run['dds']}: load average "
                      f"{' '.join(map(str, run['load_average_start']))} at the start, "
                      f"{' '.join(map(str, run['load_average_end']))} at the end"]
        if "error" in run:
            lines.append(f"failed: {run['error']}")
            continue
        if "probes" in run:
            lines.append("throughput search: " + ", ".join(
                f"{p['rate_hz']:g} Hz {'ok' if p['sustained'] else 'no'} "
                f"({max(t['drop_fraction'] for t in p['topics'].values()):.0%} dropped)"
                for p in run["probes"]))
        rows = [["topic"] + [f"{name} @{r} Hz" for r in rates
                             for name in ("received", "output Hz", "latency ms")]]
        for topic in topics:
            row = [topic]
            for r in rates:
                got = run["rates"][r]["topics"][topic]
                row += [f"{got['received']}/{run['rates'][r]['published']}",
                        f"{got['output_rate_hz']:.1f}" if got["output_rate_hz"] else "-",
                        _latency(got)]
            rows.append(row)
        lines += _columns(rows)
        lines += [f"@{r} Hz: {_where(run['rates'][r])}" for r in rates]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The player and recorder processes (``python -m hybridnets_ros.tools.bench_graph``)."""
    parser = argparse.ArgumentParser(description="bench --graph's player and recorder")
    parser.add_argument("role", choices=("player", "recorder"))
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--frames", help="the frames (.npz)")
    parser.add_argument("--camera-info", help="their CameraInfo, serialized")
    parser.add_argument("--topics")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench stops them (Ctrl-C reaches all)
    (_run_player if args.role == "player" else _run_recorder)(args)


if __name__ == "__main__":
    main()
