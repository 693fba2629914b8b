"""hybridnets_node: camera images in; detections, masks and bird's-eye grids out.

Thin glue: callbacks only hand the newest message to a worker thread (latest frame wins),
the worker converts it, runs the core pipeline and publishes what someone subscribes to.
It is a lifecycle node: configure loads the model, activate subscribes, deactivate
unsubscribes and keeps the model; ``autostart`` walks it to active by itself.

With ``cameras`` it serves several cameras through one model: each camera has its own
subscriptions, processor (CameraInfo, pose, grids), statistics and publishers under
``<name>/``; the worker runs every camera's waiting frame as one batch; a timer publishes
the surround grids fused from every camera's latest result (``fused/...``).
"""
from __future__ import annotations

if __name__ == "__main__":  # `python -m`: signals handled before the imports below (entry.py)
    from hybridnets_ros.ros.shutdown import process_shutdown
    process_shutdown()

import collections
import contextlib
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
try:
    from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks, UnsupportedEventTypeError
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..core.camera import rotation_from_quaternion
from ..core.memory import release_freed_memory
from ..pipeline.config import ConfigError, NodeConfig
from ..pipeline.engines import EngineBuild, EngineBuilds
from ..pipeline.pipeline import Result
from ..pipeline.slot import LatestSlots
from ..pipeline.stats import NodeStats
from . import params
from .bond import NO_BONDPY, ManagerBond
from .dds import InputWatch, configure_dds, loss_advice
from .log_dir import configure_log_dir
from .shutdown import BoundedShutdown, process_shutdown
from ..pipeline.factory import build_pipeline
from .diagnostics import NodeHealth, diagnostic_array
from .frame import (REBUILD_FRAMES, REBUILD_PERIOD_S, FrameProcessor, FrameRequest, GridProblem,
                    process_batch)
from .messages import stamp_ns
from .outputs import KEPT_FOR_LATE_JOINERS, model_outputs, supported
from .pairing import exact_pairs
from .surround import FUSED_QOS, FUSED_TOPICS, FUSED_TYPE, SurroundStage, has_fused_grids


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float  # time.monotonic() at arrival (with camera_info_sync exact: at pairing)
    camera_info: CameraInfo | None = None  # its own, with camera_info_sync exact


@dataclass
class Camera:
    """One camera's part of the node: topics, processor, statistics, publishers."""

    name: str                                     # "" for the single camera (no prefix)
    stats: NodeStats = field(default_factory=NodeStats)
    processor: FrameProcessor | None = None
    pubs: dict = field(default_factory=dict)      # output name -> lifecycle publisher
    last_image: float | None = None               # monotonic time of the last image
    grid_problem: str | None = None               # why the last frame had no grids
    latest: tuple[Header, Result] | None = None   # newest result, for the fused grids
    engine_build: EngineBuild | None = None       # the build its last frame waited for
    pairs: object | None = None                   # camera_info_sync exact: its pairer
    paired: int = 0                               # images paired with their CameraInfo
    last_paired: float | None = None              # monotonic time of the last pair
    image_sub: object | None = None               # its image subscription while active
    watch: InputWatch | None = None               # its publishers and frames lost in DDS

    def topic(self, relative: str) -> str:
        return f"{self.name}/{relative}" if self.name else relative

    def says(self, text: str) -> str:
        return f"camera {self.name}: {text}" if self.name else text


def _timed_publisher(pubs: dict, seconds: dict, key):
    """emit(name, message) for the frame path: publishes on ``pubs[name]`` and adds the time
    it took to ``seconds[key]``."""
    def publish(name: str, message) -> None:
        t0 = time.perf_counter()
        pubs[name].publish(message)
        seconds[key] += time.perf_counter() - t0
    return publish


class HybridNetsNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__("hybridnets_node", **kwargs)
        params.declare_all(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._worker: threading.Thread | None = None
        self._running = False
        self._inputs = []
        self._said: set[str] = set()
        self._tf = _TfLookup.create(self)
        self._bond = ManagerBond(self)
        self._load_error: str | None = None     # why the last configure failed
        self._config_error: str | None = None   # why the parameters are unacceptable
        self._listening_since = 0.0             # monotonic time of activation
        try:
            self.config: NodeConfig | None = params.config_from_node(self)
        except ConfigError as exc:  # stay up and say why; configure refuses until fixed
            self.config = None
            self._config_error = str(exc)
            self.get_logger().error(f"bad parameters: {exc}")
        # `cameras` and the diagnostics' window are read-only: fixed for the node's life.
        window = (self.config or NodeConfig()).diagnostics_window
        self.cameras = [Camera(name, NodeStats(recent_s=window))
                        for name in (self.config.cameras if self.config else ())]
        self.multi = bool(self.cameras)
        self.cameras = self.cameras or [Camera("", NodeStats(recent_s=window))]
        self.slots = LatestSlots(range(len(self.cameras)))
        self._fused_pubs: dict[str, object] = {}
        self._fused_timer = None
        self._surround = SurroundStage()
        self._fused_problem: str | None = None  # why the fused grids are all unknown
        self._engines: EngineBuilds | None = None
        self._batches: collections.deque[tuple[int, float]] = collections.deque(maxlen=200)
        period = self.config.diagnostics_period if self.config else NodeConfig().diagnostics_period
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Steady clock: diagnostics keep coming while a bag player pauses /clock; their stamps
        # use the node's clock (bag time under use_sim_time).
        self._diag_timer = self.create_timer(period, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    @property
    def pipeline(self):
        processor = self.cameras[0].processor
        return processor.pipeline if processor else None

    @property
    def lifecycle_state(self) -> str:
        """The lifecycle state's label, as rclpy's state machine holds it (its one owner)."""
        return self._state_machine.current_state[1]

    def _camera_config(self, index: int) -> NodeConfig:
        return self.config.camera_config(index) if self.multi else self.config

    # ------------------------------------------------------------------ helpers
    def say_once(self, key: str, text: str, level: str = "warning") -> None:
        if key not in self._said:
            self._said.add(key)
            # One call per level: rclpy refuses a call site whose severity changes.
            log = self.get_logger()
            if level == "info":
                log.info(text)
            elif level == "error":
                log.error(text)
            else:
                log.warning(text)

    def _reject(self, camera: Camera, reason: str, detail: str) -> None:
        if camera.stats.reject(reason):
            self.get_logger().warning(camera.says(f"rejected message: {detail} (further ones "
                                                  "are only counted in /diagnostics)"))

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
        self._engines = EngineBuilds(pipeline)
        lookup = self._tf.lookup if self._tf else None
        # One model, a processor per camera; only the outputs the model produces exist as
        # topics (no depth without a depth network, ...).
        outputs = supported(self.config.adapter)
        for index, camera in enumerate(self.cameras):
            camera.processor = FrameProcessor(pipeline, self._camera_config(index), lookup)
            camera.pubs = {o.name: self.create_lifecycle_publisher(o.msg_type, camera.topic(o.topic),
                                                                   o.qos) for o in outputs}
        if self.multi and has_fused_grids(self.config.adapter):
            self._fused_pubs = {name: self.create_lifecycle_publisher(FUSED_TYPE, topic, FUSED_QOS)
                                for name, topic in FUSED_TOPICS.items()}
        self.get_logger().info(f"model ready: {self.config.model} on "
                               f"{pipeline.backend.describe()}"
                               + (f" for cameras {', '.join(self.config.cameras)}" if self.multi else ""))
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = qos_profile_sensor_data
        if self.config.reliable_qos:
            qos = QoSProfile(reliability=QoSReliabilityPolicy.RELIABLE,
                             history=QoSHistoryPolicy.KEEP_LAST, depth=1)
        image_type, image_topic = ((CompressedImage, "image/compressed")
                                   if self.config.use_compressed else (Image, "image"))
        image_topics = []
        advice = loss_advice(reliable_qos=self.config.reliable_qos)
        for index, camera in enumerate(self.cameras):
            camera.watch = InputWatch(advice)
            on_image, on_camera_info = self._input_callbacks(index)
            image = self._watched_subscription(image_type, camera.topic(image_topic), on_image,
                                               qos, camera.watch)
            camera.image_sub = image
            image_topics.append(image.topic_name)
            self._inputs += [image, self.create_subscription(
                CameraInfo, camera.topic("camera_info"), on_camera_info, qos)]
            camera.last_image, camera.grid_problem, camera.latest = None, None, None
            camera.engine_build, camera.last_paired = None, None
        if self.config.camera_info_sync == "exact":
            self.say_once("pairing", "camera_info_sync exact: each image is processed with the "
                          "CameraInfo of its stamp, paired by " + (
                              "message_filters' TimeSynchronizer" if self.cameras[0].pairs.library
                              else "the node's own pairing (message_filters is not installed)"),
                          "info")
        self.slots.reopen()
        self._running = True
        self._worker = threading.Thread(target=self._work, name="hybridnets-worker", daemon=True)
        self._worker.start()
        if self.multi:
            self._fused_timer = self.create_timer(1.0 / self.config.fused_rate, self._publish_fused)
        self.get_logger().info(f"active: listening on {', '.join(image_topics)}")
        self._listening_since = time.monotonic()
        result = super().on_activate(state)  # activates the publishers
        header = Header(stamp=self.get_clock().now().to_msg())
        for camera in self.cameras:
            for name, msg in model_outputs(camera.processor.model_products(header)).items():
                camera.pubs[name].publish(msg)  # latched: late subscribers get it too
        self._bond.create()  # as Nav2's servers: lifecycle_manager waits for it after activate
        if not self._bond.available and not self.config.autostart:
            self.get_logger().warning(NO_BONDPY)
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._bond.destroy()
        self._stop_worker()
        for sub in self._inputs:
            self.destroy_subscription(sub)
        self._inputs = []
        for camera in self.cameras:
            camera.image_sub = camera.watch = None
        if self._fused_timer is not None:
            self.destroy_timer(self._fused_timer)
            self._fused_timer = None
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        for pub in [*self._fused_pubs.values(), *(p for c in self.cameras for p in c.pubs.values())]:
            self.destroy_lifecycle_publisher(pub)
        self._fused_pubs = {}
        for camera in self.cameras:
            camera.pubs, camera.processor, camera.latest, camera.engine_build = {}, None, None, None
        if self._engines is not None:
            self._engines.close()
            self._engines = None
        self._surround.reset()
        release_freed_memory()  # the model and engines just dropped
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._bond.destroy()
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        super().destroy_node()
        # rclpy's LifecycleNode leaves its state machine, which holds the rcl node, to the
        # interpreter's finalisation; main() leaves with os._exit (shutdown.py), and without
        # this the node would stay in the graph until its DDS lease runs out (20 s).
        self._state_machine.destroy_when_not_in_use()

    def _stop_worker(self, timeout: float | None = None) -> None:
        """Stops the worker after its current batch (waits at most ``timeout`` seconds: at
        exit a batch still in the network is abandoned with the daemon thread)."""
        self._running = False
        self.slots.close()
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    def _watched_subscription(self, msg_type, topic: str, callback, qos, watch: InputWatch):
        """A subscription whose samples lost in DDS transport ``watch`` counts."""
        try:
            return self.create_subscription(msg_type, topic, callback, qos, event_callbacks=(
                SubscriptionEventCallbacks(message_lost=watch.on_lost)))
        except UnsupportedEventTypeError:  # a middleware without the event: no lost count
            return self.create_subscription(msg_type, topic, callback, qos)

    # ---------------------------------------------------------------- callbacks
    def _input_callbacks(self, index: int):
        """The image and CameraInfo callbacks of camera ``index``: with camera_info_sync
        latest an image goes to the worker at once and a CameraInfo replaces the camera's;
        with exact an image waits for the CameraInfo of its stamp and travels with it."""
        camera = self.cameras[index]

        def arrived() -> None:
            camera.last_image = time.monotonic()
            camera.stats.frame_received()

        if self.config.camera_info_sync == "latest":
            camera.pairs = None

            def on_image(msg) -> None:
                arrived()
                self.slots.put(index, Frame(msg, camera.last_image))
            return on_image, self._camera_info_callback(camera)

        def on_pair(image, info) -> None:
            camera.paired += 1
            camera.last_paired = time.monotonic()
            self.slots.put(index, Frame(image, camera.last_paired, info))
        pairs = camera.pairs = exact_pairs(on_pair)

        def on_paired_image(msg) -> None:
            arrived()
            pairs.add(0, msg)
        return on_paired_image, lambda msg: pairs.add(1, msg)

    def _camera_info_callback(self, camera: Camera):
        def on_camera_info(msg: CameraInfo) -> None:
            if camera.processor is not None and (problem := camera.processor.set_camera_info(msg)):
                self._reject(camera, problem.reason.value, f"{problem}: grids skipped")
        return on_camera_info

    def _on_set_parameters(self, changes) -> SetParametersResult:
        state = self.lifecycle_state
        if state != "unconfigured" and (fixed := params.configure_time(c.name for c in changes)):
            return SetParametersResult(successful=False, reason=(
                f"{', '.join(fixed)} can only change while the node is unconfigured (it is "
                f"{state}): deactivate and clean it up, set it, then configure again"))
        values = params.parameter_values(self)
        # Only the settings are NodeConfig's to judge: rclpy's use_sim_time is not one.
        values.update({change.name: change.value for change in changes if change.name in values})
        try:
            config = NodeConfig.from_mapping(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.config = config
        for index, camera in enumerate(self.cameras):
            if camera.processor is not None:
                camera.processor.update_config(self._camera_config(index))
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------- worker
    def _work(self) -> None:
        while self._running:
            frames = self.slots.take_all(timeout=0.5)  # camera index -> its newest frame
            self._report_builds()
            if not frames:
                continue
            try:
                self._process(frames)
            except Exception as exc:  # never let one batch kill the worker
                if not self.context.ok():  # Ctrl-C shut ROS down under this frame: drop it
                    self.get_logger().info("shutting down: the frame in flight is dropped")
                    return
                for index in frames:
                    self.cameras[index].stats.count_error()
                self.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")

    def _process(self, frames: dict[int, Frame]) -> None:
        """Every camera's waiting frame through one network call, then each camera's outputs."""
        fused = any(pub.get_subscription_count() for pub in self._fused_pubs.values())
        requests, batch, publish_s = [], [], {}
        for index, frame in frames.items():
            camera = self.cameras[index]
            wanted = {name for name, pub in camera.pubs.items() if pub.get_subscription_count()}
            wanted &= camera.processor.enabled
            if not wanted and not fused:
                camera.stats.count_skipped_no_subscribers()
                continue
            if frame.camera_info is not None and (
                    problem := camera.processor.set_camera_info(frame.camera_info)):
                self._reject(camera, problem.reason.value, f"{problem}: grids skipped")
            wanted |= KEPT_FOR_LATE_JOINERS & camera.processor.enabled
            publish_s[index] = 0.0
            requests.append(FrameRequest(camera.processor, frame.msg, wanted,
                                         emit=_timed_publisher(camera.pubs, publish_s, index)))
            batch.append((index, frame))
        if not requests:
            return
        for index, _ in batch:  # how long a frame takes, for "falling behind"
            self.cameras[index].stats.frame_started()
        try:
            outcomes = process_batch(requests, self._engines)
            network = [o.timings_ms["network"] for o in outcomes if o.result is not None]
            if network:
                self._batches.append((len(network), network[0]))
            for (index, frame), outcome in zip(batch, outcomes):
                self._account(self.cameras[index], frame, outcome, publish_s[index])
        finally:
            for index, _ in batch:
                self.cameras[index].stats.frame_done()

    def _account(self, camera: Camera, frame: Frame, outcome, publish_s: float) -> None:
        """Rejections, grid problems and statistics of a camera's processed frame (its
        messages went out while they were built)."""
        if outcome.rejected is not None:
            self._reject(camera, outcome.rejected.reason, str(outcome.rejected))
            return
        camera.engine_build = build = outcome.engine_build
        if build is not None:  # dropped: the newest frame runs once the engine is there
            camera.stats.count_problem("frames_dropped_engine_build")
            if build.error is None:
                self.say_once(f"engine build {id(build)}", camera.says(
                    f"building engine for {build.describe()} (network input "
                    f"{build.shape[2]}x{build.shape[1]}): this camera's frames are dropped "
                    "until it is ready" + (", the other cameras' keep running"
                                           if self.multi else "")))
            return
        camera.latest = (frame.msg.header, outcome.result)
        self._report_grids(camera, outcome)
        # The messages stage includes the publishing, which happens as each is built.
        stages = dict(outcome.timings_ms, publish=publish_s * 1e3)
        stages["messages"] -= stages["publish"]
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns(frame.msg.header)) / 1e6
        camera.stats.frame_processed((time.monotonic() - frame.received) * 1e3, stages, age_ms)

    def _report_grids(self, camera: Camera, outcome) -> None:
        problem = outcome.no_grids
        wanted_grids = problem is not None or outcome.products.grids is not None
        if wanted_grids:  # a bad CameraInfo too: it stays in use until a good one comes
            camera.grid_problem = None if problem is None else str(problem)
        if problem is None:
            cause = outcome.projector_rebuilt
            projector = outcome.products.projector
            if cause is not None:
                g = projector.grid
                built = (f"bird's-eye lookup built: {g.width}x{g.height} cells, "
                         f"{100 * projector.seen_fraction:.0f}% in view")
            if cause == "calibration":  # a driver may change it every frame: said once
                camera.stats.count_problem("grid_lookup_rebuilds")
                self.say_once(camera.name + "calibration changes", camera.says(
                    f"the CameraInfo or TF pose values changed: {built}; further changes "
                    f"are counted in /diagnostics (grid_lookup_rebuilds), the lookup rebuilt "
                    f"at most once per {REBUILD_FRAMES} frames or {REBUILD_PERIOD_S:g} s"), "info")
            elif cause is not None:  # the first lookup, or settings changed
                if projector.seen_fraction == 0:
                    self.get_logger().warning(camera.says(
                        f"{built}: no cell of the grid is in view (check camera_pose, the "
                        "grid ranges and the CameraInfo)"))
                else:
                    self.get_logger().info(camera.says(built))
        elif problem.bad_input:
            if not problem.repeated:  # counted once per message, not once per frame
                self._reject(camera, problem.reason.value, f"{problem}: grids skipped")
        elif problem.reason is GridProblem.IMPOSSIBLE_POSE:
            camera.stats.count_problem("frames_impossible_pose")
            self.say_once(camera.name + str(problem), camera.says(
                f"{problem}: grids and 3D detections are not published until the pose is "
                "fixed"), "error")
        elif problem.reason is GridProblem.NO_CAMERA_INFO:
            self.say_once(camera.name + "no_camera_info", camera.says(
                f"no CameraInfo received on '{camera.topic('camera_info')}' yet: occupancy "
                "grids and 3D detections are not published until one arrives"), "info")
        else:
            self.say_once(camera.name + problem.reason.value,
                          camera.says(f"{problem}: grids and 3D detections are not published"))

    # ------------------------------------------------------------- fused grids
    def _publish_fused(self) -> None:
        """The surround grids from every camera's latest result, while someone subscribes."""
        if not any(pub.get_subscription_count() for pub in self._fused_pubs.values()):
            return
        latest = [(camera.processor, *camera.latest) if camera.latest and camera.processor
                  else None for camera in self.cameras]
        fused, self._fused_problem = self._surround.messages(
            latest, self.config.fused_grid, self.config.ground_frame,
            self.get_clock().now().to_msg(), [camera.name for camera in self.cameras])
        # Said once each time the grids go blank after the cameras have sent something.
        if self._fused_problem is None:
            self._said.discard("fused blank")
        elif any(entry is not None for entry in latest):
            self.say_once("fused blank", f"fused grids all unknown: {self._fused_problem}")
        with self._unless_shutting_down():
            for name, msg in fused.items():
                self._fused_pubs[name].publish(msg)

    def _report_builds(self) -> None:
        """Logs the engine builds that finished since the last call."""
        for build in self._engines.finished() if self._engines else ():
            if build.error is None:
                self.get_logger().info(f"engine for {build.describe()} built in "
                                       f"{build.seconds:.1f} s" + (
                                           f" (attempt {build.attempts})"
                                           if build.attempts > 1 else ""))
            else:
                self.get_logger().error(
                    f"engine for {build.describe()}: {build.progress()}; frames of that "
                    "size are dropped until it is built")

    # -------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self) -> None:
        pipeline = self.pipeline
        node = NodeHealth(self.get_name(), self.get_fully_qualified_name(),
                          pipeline.backend.describe() if pipeline else "none",
                          self.lifecycle_state, self.config,
                          self._config_error, self._load_error,
                          self._listening_since, self.multi, self._engines,
                          self._fused_problem if self._fused_pubs else None,
                          self._bond.describe(), self._bond.problem())
        with self._unless_shutting_down():
            now = time.monotonic()
            for camera in self.cameras:
                if camera.image_sub is not None:
                    camera.watch.update(camera.image_sub.get_publisher_count(),
                                        camera.stats.received.total, now)
            self._diag_pub.publish(diagnostic_array(
                node, self.cameras, [self.slots.dropped[i] for i in range(len(self.cameras))],
                list(self._batches), self.get_clock().now().to_msg()))

    @contextlib.contextmanager
    def _unless_shutting_down(self):
        """A timer's publishing that Ctrl-C's shutdown cuts off (its handles destroyed under
        it) ends quietly instead of taking the executor down."""
        try:
            yield
        except Exception:
            if self.context.ok():
                raise

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
    """Runs the node until SIGINT or SIGTERM (exit status 0) and ends the process: it never
    returns (shutdown.py says why it leaves through os._exit)."""
    shutdown = process_shutdown()  # entry.py or the top of this file installed it already
    code = 1
    try:
        _run(args, shutdown)
        code = 0
    except Exception:
        if shutdown.received is None:
            traceback.print_exc()
        else:  # the signal's shutdown cut a step short (rclpy's calls fail after it)
            code = 0
    finally:
        shutdown.exit(code)


def _run(args, shutdown: BoundedShutdown) -> None:
    extra_args, messages = configure_log_dir()  # before rclpy.init, which opens the log file
    messages += configure_dds(node=True)  # before rclpy creates the participant
    # The watcher thread owns SIGINT/SIGTERM (rclpy's handlers wait for the main thread).
    rclpy.init(args=[*(sys.argv if args is None else args), *extra_args],
               signal_handler_options=SignalHandlerOptions.NO)
    node = wake = None
    stop = threading.Event()

    def on_signal() -> None:
        # Runs in the watcher's thread. ROS is shut down by the main thread alone, between
        # callbacks: rclpy.shutdown here, under a transition the main thread is running
        # (autostart's activate, a manager's configure), crashed the process (SIGSEGV in
        # rcl_lifecycle's state machine). The watcher's grace bounds a long callback.
        try:  # a manager is told while ROS is still up (Nav2's servers: at pre-shutdown),
            # and bondpy's heartbeat thread stops before the context it publishes in
            if node is not None:
                node._bond.destroy()
        finally:
            stop.set()
            if wake is not None:
                wake.trigger()  # wakes the executor's wait in the main thread
    shutdown.orderly(on_signal)
    node = HybridNetsNode()
    wake = node.create_guard_condition(lambda: None)
    log = node.get_logger()
    for level, message in messages:  # one call per level: rclpy refuses a call site whose
        if level == "warning":       # severity changes
            log.warning(message)
        else:
            log.info(message)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not stop.is_set() and not node.autostart():
            node.get_logger().error("autostart failed; the node stays up for a new configure")
        while not stop.is_set():
            executor.spin_once()
    finally:
        node._bond.destroy()
        node._stop_worker(timeout=0.2)  # a frame still in the network is dropped
        node.destroy_node()  # its endpoints leave the graph now (os._exit would not say so)
        rclpy.try_shutdown()
        shutdown.finished()


if __name__ == "__main__":
    main()
