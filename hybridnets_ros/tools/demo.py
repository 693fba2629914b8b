"""The main job: player -> hybridnets_node (its own process) -> recorder, over DDS.

Publishes a frame sequence with its CameraInfo, lets the real node process it, records
overlays, grid pictures and a summary with rates and latencies, then stops everything.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..ros.dds import configure_dds


def node_command(model: str, weights: Path | None, params_file: Path | None = None) -> list[str]:
    """The node with ``model`` and its ``weights`` (None: random); the other parameters from
    ``params_file``, else the node's defaults (no other network's file)."""
    args = [sys.executable, "-m", "hybridnets_ros.ros.node", "--ros-args"]
    if params_file is not None:
        args += ["--params-file", str(params_file)]
    args += ["-p", f"model:={model}"]
    if weights is None:
        args += ["-p", "allow_random_weights:=true"]
    else:
        args += ["-p", f"weights:={weights}"]
    return args


class _Graph:
    """The node as its own process, with the player and the recorder in this one."""

    def __init__(self, command: list[str], camera_info, output: Path, log=print):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from .player import FramePlayer
        from .recorder import OutputRecorder

        for level, message in configure_dds():  # the node process inherits it
            if level == "warning":
                log(message)
        self.node = subprocess.Popen(command, env=os.environ.copy())
        rclpy.init()
        self.player = FramePlayer(camera_info=camera_info)
        self.recorder = OutputRecorder(output)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.player)
        self.executor.add_node(self.recorder)

    def spin_for(self, seconds: float, until=lambda: False) -> bool:
        """Spin up to ``seconds`` or until ``until()``; raises if the node exits."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until():
                return True
            if self.node.poll() is not None:
                raise RuntimeError(f"hybridnets_node exited with code {self.node.returncode}")
            self.executor.spin_once(timeout_sec=0.02)
        return until()

    def warm_up(self, first: np.ndarray, timeout: float) -> None:
        """Wait for the node to subscribe, then re-send the first frame until a result comes
        back: the node works only for outputs it sees subscribed, and its side of the
        discovery can lag ours."""
        player, recorder = self.player, self.recorder
        if not self.spin_for(timeout, lambda: player.image_pub.get_subscription_count() > 0
                             and recorder.count_publishers("detections") > 0):
            raise RuntimeError(f"hybridnets_node did not come up within {timeout:.0f} s")
        deadline = time.monotonic() + timeout
        while not recorder.arrival:
            if time.monotonic() > deadline:
                raise RuntimeError("hybridnets_node published no result for the warm-up frame")
            player.publish(-1, first, record=False)
            self.spin_for(1.0, lambda: bool(recorder.arrival))

    def play(self, frames, rate_hz: float) -> None:
        """Publish ``frames`` at ``rate_hz`` and wait for the last results."""
        start = time.monotonic()
        for index, frame in enumerate(frames):
            self.spin_for(start + index / rate_hz - time.monotonic())  # keep receiving meanwhile
            stamp = self.player.publish(index, frame).stamp_ns
            # The next frame is rendered or decoded only once this one's result is back (or
            # its period is over): on a small CPU that work would otherwise slow the node's
            # network stage down and be measured as the node's latency.
            self.spin_for(start + (index + 1) / rate_hz - time.monotonic(),
                          lambda: stamp in self.recorder.arrival)
        published = self.player.published
        last = published[-1].stamp_ns if published else None
        self.spin_for(30.0, lambda: last is None or last in self.recorder.arrival)
        self.spin_for(1.5)  # one more /diagnostics period

    def stop(self) -> None:
        import rclpy

        self.node.send_signal(signal.SIGINT)
        try:
            self.node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.node.kill()
            self.node.wait()
        self.executor.shutdown()
        rclpy.try_shutdown()

    def summary(self, rate_hz: float, weights: Path | None) -> dict:
        player, recorder = self.player, self.recorder
        files = []
        for frame in player.published:
            files += recorder.write(frame.stamp_ns, frame.index)
        latencies = [(recorder.arrival[f.stamp_ns] - f.wall_time) * 1e3
                     for f in player.published if f.stamp_ns in recorder.arrival]
        diag = {}
        if recorder.diagnostics is not None:
            diag = {kv.key: kv.value for kv in recorder.diagnostics.status[0].values}
        return {
            "frames_published": len(player.published),
            "frames_with_results": len(latencies),
            "publish_rate_hz": rate_hz,
            "end_to_end_latency_ms": {
                "median": float(np.median(latencies)) if latencies else None,
                "p95": float(np.percentile(latencies, 95)) if latencies else None},
            "node_diagnostics": diag,
            "node_exit_code": self.node.returncode,
            "random_weights": weights is None,
            "files": files,
        }


def run_demo(frames: Iterator[np.ndarray], camera_info, output: Path, model: str,
             weights: Path | None, params_file: Path | None = None, rate_hz: float = 2.0,
             startup_timeout: float = 120.0, log=print) -> dict:
    """Runs the graph with ``model``; returns the summary (also written to
    output/summary.json)."""
    output.mkdir(parents=True, exist_ok=True)
    graph = _Graph(node_command(model, weights, params_file), camera_info, output, log)
    try:
        log("waiting for hybridnets_node to load the model and subscribe ...")
        frames = iter(frames)
        first = next(frames, None)
        if first is None:
            raise RuntimeError("no frames to publish")
        graph.warm_up(first, startup_timeout)
        graph.play(itertools.chain([first], frames), rate_hz)
        log(f"published {len(graph.player.published)} frames; got the last results")
    finally:
        graph.stop()
    summary = {"model": model, **graph.summary(rate_hz, weights)}
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
