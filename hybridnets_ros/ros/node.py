"""hybridnets_node: camera images in; detections, masks and bird's-eye grids out.

Thin glue: callbacks only hand the newest message to a worker thread (latest frame wins),
the worker converts it, runs the core pipeline and publishes what someone subscribes to.
It is a lifecycle node: configure loads the model, activate subscribes, deactivate
unsubscribes and keeps the model; ``autostart`` walks it to active by itself.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..slot import LatestSlot
from ..stats import NodeStats
from . import params
from .messages import stamp_ns
from .conversions import ImageConversionError, to_bgr
from .outputs import (GRID_OUTPUTS, OUTPUT_QOS, OUTPUTS, GridUnavailable, ProjectorCache,
                      build_outputs, grid_spec)


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float  # time.monotonic() at arrival


class HybridNetsNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("hybridnets_node", **kwargs)
        params.declare_all(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.stats = NodeStats()
        self.slot = LatestSlot()
        self.pipeline = None
        self._worker: threading.Thread | None = None
        self._running = False
        self._inputs = []
        self._pubs: dict[str, object] = {}
        self._camera_info: CameraInfo | None = None
        self._projectors = ProjectorCache()
        self._said: set[str] = set()
        self._tf = _TfLookup.create(self)
        self._state = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady clock: diagnostics keep coming while a bag player pauses /clock; their stamps
        # use the node's clock (bag time under use_sim_time).
        self._diag_timer = self.create_timer(self.p("diagnostics_period"), self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ------------------------------------------------------------------ helpers
    def p(self, name: str):
        return self.get_parameter(name).value

    def say_once(self, key: str, text: str, level: str = "warning") -> None:
        if key not in self._said:
            self._said.add(key)
            getattr(self.get_logger(), level)(text)

    def _reject(self, reason: str, detail: str) -> None:
        if self.stats.reject(reason):
            self.get_logger().warning(f"rejected message: {detail} (further ones are only "
                                      "counted in /diagnostics)")

    # ---------------------------------------------------------------- lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.pipeline = self._build_pipeline()
        except Exception as exc:  # any load/build failure: stay unconfigured, say why
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._pubs = {name: self.create_lifecycle_publisher(msg_type, topic, OUTPUT_QOS)
                      for name, (topic, msg_type) in OUTPUTS.items()}
        self._state = "inactive"
        return super().on_configure(state)

    def _build_pipeline(self):
        from ..backends import create_backend
        from ..pipeline import Pipeline
        from ..weights import build_model, default_weights_path

        weights = self.p("weights") or None
        if weights is None and default_weights_path().is_file():
            weights = str(default_weights_path())
        if weights is None and not self.p("allow_random_weights"):
            raise RuntimeError("no weights: set the 'weights' parameter, run `hybridnets "
                               "download-weights`, or set allow_random_weights:=true")
        if weights is None:
            self.get_logger().warning("RANDOM WEIGHTS: detections and masks are meaningless")
        self.get_logger().info(f"loading {weights or 'random weights'} ...")
        started = time.monotonic()
        model = build_model(weights, random_weights=weights is None)
        device = self.p("device")
        if device == "auto":
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
        resolution = list(self.p("camera_resolution") or [])
        backend = create_backend(self.p("backend"), model, device=device,
                                 precision=self.p("precision"), input_size=self.p("input_size"),
                                 calib=self.p("int8_calibration") or None,
                                 source_hw=tuple(reversed(resolution)) if resolution else None)
        pipeline = Pipeline(backend, self.p("input_size"), self.p("conf_threshold"),
                            self.p("iou_threshold"))
        if resolution:
            input_hw = pipeline.preprocessor.letterbox(tuple(reversed(resolution))).input_hw
            self.get_logger().info(f"preparing {backend.describe()} for {resolution[0]}x"
                                   f"{resolution[1]} input (network {input_hw[1]}x{input_hw[0]}) ...")
            backend.prepare(input_hw)
        self.get_logger().info(f"model ready in {time.monotonic() - started:.1f} s: "
                               f"{backend.describe()}")
        return pipeline

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = qos_profile_sensor_data
        if self.p("reliable_qos"):
            qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                             history=QoSHistoryPolicy.KEEP_LAST, depth=1)
        if self.p("use_compressed"):
            self._inputs.append(self.create_subscription(
                CompressedImage, "image/compressed", self._on_image, qos))
        else:
            self._inputs.append(self.create_subscription(Image, "image", self._on_image, qos))
        self._inputs.append(self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, qos))
        self.slot.reopen()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="hybridnets-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"active: listening on {self._inputs[0].topic_name}")
        self._state = "active"
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        self._state = "inactive"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        self.pipeline = None
        self._projectors = ProjectorCache()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_worker()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self) -> None:
        self._running = False
        self.slot.close()
        if self._worker is not None:
            self._worker.join()
            self._worker = None

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        self.stats.frame_received()
        self.slot.put(Frame(msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_set_parameters(self, changes) -> SetParametersResult:
        for change in changes:
            reason = params.validate(change.name, change.value)
            if reason is None and change.name in ("grid_resolution", "grid_x_range", "grid_y_range"):
                reason = self._check_grid(change.name, change.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        for change in changes:
            if self.pipeline is not None and change.name in ("conf_threshold", "iou_threshold"):
                setattr(self.pipeline, change.name, float(change.value))
        return SetParametersResult(successful=True)

    def _check_grid(self, name: str, value) -> str | None:
        current = {n: self.p(n) for n in ("grid_resolution", "grid_x_range", "grid_y_range")}
        current[name] = value
        try:
            grid_spec(current["grid_resolution"], current["grid_x_range"], current["grid_y_range"])
        except ValueError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------- worker
    def _work(self) -> None:
        while self._running:
            frame = self.slot.take(timeout=0.5)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as exc:  # never let one frame kill the worker
                self.stats.errors += 1
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")

    def _process(self, frame: Frame) -> None:
        msg = frame.msg
        wanted = {name for name, pub in self._pubs.items() if pub.get_subscription_count()}
        if not self.p("publish_points"):
            wanted -= {"drivable_points", "lane_points"}
        if not wanted:
            self.stats.skipped_no_subscribers += 1
            return
        t0 = time.monotonic()
        try:
            bgr = to_bgr(msg)
        except ImageConversionError as exc:
            self._reject(exc.reason, str(exc))
            return
        t1 = time.monotonic()
        result = self.pipeline(bgr)
        t2 = time.monotonic()
        wanted.add("detections")  # published for every processed frame
        projector = self._projector(msg.header, bgr.shape[:2]) if wanted & GRID_OUTPUTS else None
        outputs = build_outputs(wanted, msg.header, bgr, result, self.pipeline.spec.class_names,
                                projector, self.p("ground_frame"))
        for name, out in outputs.items():
            self._pubs[name].publish(out)
        t3 = time.monotonic()
        stages = dict(result.timings_ms, conversion=(t1 - t0) * 1e3, publish=(t3 - t2) * 1e3)
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns(msg.header)) / 1e6
        self.stats.frame_processed((t3 - frame.received) * 1e3, stages, age_ms)

    def _projector(self, header: Header, image_hw):
        """The bird's-eye lookup for this frame, or None (said once / counted)."""
        pose = list(self.p("camera_pose") or [])
        transform = None
        if not pose:
            transform = self._tf.lookup(self.p("ground_frame"), header) if self._tf else None
            if transform is None:
                self.say_once("no_pose", "camera_pose is empty and no TF from "
                              f"'{self.p('ground_frame')}' to '{header.frame_id}' is available: "
                              "grids are not published")
                return None
        grid = (self.p("grid_resolution"), tuple(self.p("grid_x_range")), tuple(self.p("grid_y_range")))
        try:
            projector, rebuilt = self._projectors.get(self._camera_info, image_hw, grid,
                                                      self.p("rectified"), pose, transform)
        except GridUnavailable as exc:
            if exc.reason == "no camera_info":
                self.say_once("no_camera_info", "no CameraInfo received on 'camera_info' yet: "
                              "occupancy grids are not published until one arrives", "info")
            else:
                self._reject(exc.reason, f"{exc}: grids skipped")
            return None
        if rebuilt:
            g = projector.grid
            self.get_logger().info(f"bird's-eye lookup built: {g.width}x{g.height} cells, "
                                   f"{100 * projector.seen_fraction:.0f}% in view")
        return projector

    # -------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        s = self.stats.snapshot()
        state = self._state
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: perception",
                                  hardware_id=self.pipeline.backend.describe() if self.pipeline else "none")
        level, message = DiagnosticStatus.OK, "ok"
        if self.pipeline is None:
            level, message = DiagnosticStatus.WARN, f"not configured ({state})"
        elif s["rejected"] or s["errors"]:
            level, message = DiagnosticStatus.WARN, "some messages rejected or failed"
        status.level, status.message = level, message
        values = {
            "state": state,
            "backend": status.hardware_id,
            "frames_received": s["frames_received"],
            "frames_processed": s["frames_processed"],
            "frames_dropped": self.slot.dropped,
            "input_rate_hz": f"{s['input_rate_hz']:.2f}",
            "processed_rate_hz": f"{s['processed_rate_hz']:.2f}",
            "latency_median_ms": f"{s['latency_median_ms']:.1f}",
            "latency_p95_ms": f"{s['latency_p95_ms']:.1f}",
            "input_age_median_ms": f"{s['input_age_median_ms']:.1f}",
            "skipped_no_subscribers": s["skipped_no_subscribers"],
            "errors": s["errors"],
            "rejected_total": sum(s["rejected"].values()),
            "camera_info": "received" if self._camera_info is not None else "missing",
        }
        values.update({f"stage_{k}_ms": f"{v:.1f}" for k, v in s["stage_median_ms"].items()})
        values.update({f"rejected: {reason}": n for reason, n in s["rejected"].items()})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                               status=[status]))

    def autostart(self) -> bool:
        if not self.p("autostart"):
            return True
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS


class _TfLookup:
    """Camera pose from TF when tf2_ros is installed (a ROS workspace; not the pip venv)."""

    def __init__(self, node, tf2_ros):
        self._buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self._buffer, node)
        self._node = node

    @classmethod
    def create(cls, node):
        try:
            import tf2_ros
        except ImportError:
            return None
        return cls(node, tf2_ros)

    def lookup(self, ground_frame: str, header: Header):
        try:
            tf = self._buffer.lookup_transform(ground_frame, header.frame_id, rclpy.time.Time())
        except Exception:
            return None
        q = tf.transform.rotation
        x, y, z, w = q.x, q.y, q.z, q.w
        R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                      [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                      [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
        t = tf.transform.translation
        return R, np.array([t.x, t.y, t.z])


def main(args=None) -> None:
    rclpy.init(args=args)
    node = HybridNetsNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not node.autostart():
            node.get_logger().error("autostart failed; the node stays up for a new configure")
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
