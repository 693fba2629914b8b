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

from ..core.camera import rotation_from_quaternion
from ..pipeline.config import ConfigError, NodeConfig
from ..pipeline.slot import LatestSlot
from ..pipeline.stats import NodeStats
from . import params
from ..pipeline.factory import build_pipeline
from .frame import FrameProcessor
from .messages import stamp_ns
from .outputs import model_outputs, supported

# /diagnostics says WARN after this many diagnostics periods without an image.
SILENT_PERIODS = 3


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
        self.processor: FrameProcessor | None = None
        self._worker: threading.Thread | None = None
        self._running = False
        self._inputs = []
        self._pubs: dict[str, object] = {}
        self._said: set[str] = set()
        self._tf = _TfLookup.create(self)
        self._state = "unconfigured"
        self._load_error: str | None = None     # why the last configure failed
        self._grid_problem: str | None = None   # why the last frame had no grids
        self._listening_since = 0.0             # monotonic time of activation
        self._last_image: float | None = None   # monotonic time of the last image
        try:
            self.config: NodeConfig | None = params.config_from_node(self)
        except ConfigError as exc:  # stay up and say why; configure refuses until fixed
            self.config = None
            self._config_error = str(exc)
            self.get_logger().error(f"bad parameters: {exc}")
        period = self.config.diagnostics_period if self.config else NodeConfig().diagnostics_period
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady clock: diagnostics keep coming while a bag player pauses /clock; their stamps
        # use the node's clock (bag time under use_sim_time).
        self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    @property
    def pipeline(self):
        return self.processor.pipeline if self.processor else None

    # ------------------------------------------------------------------ helpers
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
        if self.config is None:
            self.get_logger().error(f"configure refused: bad parameters: {self._config_error}")
            return TransitionCallbackReturn.FAILURE
        try:
            pipeline = build_pipeline(self.config)
        except Exception as exc:  # any load/build failure: stay unconfigured, say why
            self._load_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return TransitionCallbackReturn.FAILURE
        self._load_error = None
        lookup = self._tf.lookup if self._tf else None
        self.processor = FrameProcessor(pipeline, self.config, lookup)
        # Only the outputs the model produces exist as topics (no depth for HybridNets, ...).
        self._pubs = {o.name: self.create_lifecycle_publisher(o.msg_type, o.topic, o.qos)
                      for o in supported(self.config.family)}
        self.get_logger().info(f"model ready: {pipeline.backend.describe()}")
        self._state = "inactive"
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = qos_profile_sensor_data
        if self.config.reliable_qos:
            qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                             history=QoSHistoryPolicy.KEEP_LAST, depth=1)
        if self.config.use_compressed:
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
        self._listening_since, self._last_image, self._grid_problem = time.monotonic(), None, None
        result = super().on_activate(state)  # activates the publishers
        header = Header(stamp=self.get_clock().now().to_msg())
        for name, msg in model_outputs(self.processor.model_products(header)).items():
            self._pubs[name].publish(msg)  # latched: late subscribers get it too
        return result

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
        self.processor = None
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
        self._last_image = time.monotonic()
        self.stats.frame_received()
        self.slot.put(Frame(msg, time.monotonic()))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        if self.processor is not None and (problem := self.processor.set_camera_info(msg)):
            self._reject(problem.reason, f"{problem}: grids skipped")

    def _on_set_parameters(self, changes) -> SetParametersResult:
        values = params.parameter_values(self)
        values.update({change.name: change.value for change in changes})
        try:
            config = NodeConfig.from_mapping(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.config = config
        if self.processor is not None:
            self.processor.update_config(config)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------- worker
    def _work(self) -> None:
        while self._running:
            frame = self.slot.take(timeout=0.5)
            if frame is None:
                continue
            try:
                self._process(frame)
            except Exception as exc:  # never let one frame kill the worker
                if not self.context.ok():  # Ctrl-C shut ROS down under this frame: drop it
                    self.get_logger().info("shutting down: the frame in flight is dropped")
                    return
                self.stats.count_error()
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")

    def _process(self, frame: Frame) -> None:
        wanted = {name for name, pub in self._pubs.items() if pub.get_subscription_count()}
        wanted &= self.processor.enabled
        if not wanted:
            self.stats.count_skipped_no_subscribers()
            return
        publish_s = 0.0

        def publish(name: str, message) -> None:
            nonlocal publish_s
            t0 = time.perf_counter()
            self._pubs[name].publish(message)
            publish_s += time.perf_counter() - t0

        outcome = self.processor.process(frame.msg, wanted, emit=publish)
        if outcome.rejected is not None:
            self._reject(outcome.rejected.reason, str(outcome.rejected))
            return
        self._report_grids(outcome)
        # The messages stage includes the publishing, which happens as each is built.
        stages = dict(outcome.timings_ms, publish=publish_s * 1e3)
        stages["messages"] -= stages["publish"]
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns(frame.msg.header)) / 1e6
        self.stats.frame_processed((time.monotonic() - frame.received) * 1e3, stages, age_ms)

    def _report_grids(self, outcome) -> None:
        problem = outcome.no_grids
        wanted_grids = problem is not None or outcome.products.grids is not None
        if wanted_grids:
            self._grid_problem = None if problem is None or problem.bad_input else str(problem)
        if problem is None:
            if outcome.projector_rebuilt:
                projector = outcome.products.projector
                g = projector.grid
                self.get_logger().info(f"bird's-eye lookup built: {g.width}x{g.height} cells, "
                                       f"{100 * projector.seen_fraction:.0f}% in view")
        elif problem.bad_input:
            if not problem.repeated:  # counted once per message, not once per frame
                self._reject(problem.reason, f"{problem}: grids skipped")
        elif problem.reason == "no camera_info":
            self.say_once("no_camera_info", "no CameraInfo received on 'camera_info' yet: "
                          "occupancy grids and 3D detections are not published until one "
                          "arrives", "info")
        else:
            self.say_once(problem.reason, f"{problem}: grids and 3D detections are not published")

    # -------------------------------------------------------------- diagnostics
    def _health(self) -> tuple[bytes, str]:
        """(level, message) of /diagnostics: the most serious problem first."""
        if self.config is None:
            return DiagnosticStatus.ERROR, f"bad parameters: {self._config_error}"
        if self._load_error is not None:
            return DiagnosticStatus.ERROR, f"model failed to load: {self._load_error}"
        if self._state != "active":
            return DiagnosticStatus.WARN, f"not active ({self._state})"
        silent = time.monotonic() - (self._last_image or self._listening_since)
        if silent > SILENT_PERIODS * self.config.diagnostics_period:
            topic = self._inputs[0].topic_name if self._inputs else "image"
            return DiagnosticStatus.WARN, f"no image received on {topic} for {silent:.0f} s"
        if self._grid_problem is not None:
            return DiagnosticStatus.WARN, f"no occupancy grids: {self._grid_problem}"
        s = self.stats.snapshot()
        if s["rejected"] or s["errors"]:
            return DiagnosticStatus.WARN, "some messages rejected or failed"
        return DiagnosticStatus.OK, "ok"

    def _publish_diagnostics(self) -> None:
        s = self.stats.snapshot()
        # Named as diagnostic_updater names its tasks; "node" tells namespaces apart.
        status = DiagnosticStatus(name=f"{self.get_name()}: perception",
                                  hardware_id=self.pipeline.backend.describe() if self.pipeline else "none")
        status.level, status.message = self._health()
        values = {
            "node": self.get_fully_qualified_name(),
            "state": self._state,
            "backend": status.hardware_id,
            "frames_received": s["frames_received"],
            "frames_processed": s["frames_processed"],
            "frames_dropped": self.slot.dropped,
            "input_rate_hz": f"{s['input_rate_hz']:.2f}",
            "processed_rate_hz": f"{s['processed_rate_hz']:.2f}",
        }
        # Latencies exist once a frame was processed; before that they are left out.
        values.update({key: f"{s[key]:.1f}" for key in
                       ("latency_median_ms", "latency_p95_ms", "input_age_median_ms")
                       if np.isfinite(s[key])})
        values.update({
            "skipped_no_subscribers": s["skipped_no_subscribers"],
            "errors": s["errors"],
            "rejected_total": sum(s["rejected"].values()),
            "camera_info": ("received" if self.processor is not None
                            and self.processor.camera_info is not None else "missing"),
        })
        values.update({f"stage_{k}_ms": f"{v:.1f}" for k, v in s["stage_median_ms"].items()})
        values.update({f"rejected: {reason}": n for reason, n in s["rejected"].items()})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                               status=[status]))

    def autostart(self) -> bool:
        if self.config is not None and not self.config.autostart:
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
        q, t = tf.transform.rotation, tf.transform.translation
        return rotation_from_quaternion(q.x, q.y, q.z, q.w), np.array([t.x, t.y, t.z])


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
