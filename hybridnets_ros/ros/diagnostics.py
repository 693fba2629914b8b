"""/diagnostics of hybridnets_node: its health and one camera's values, as statuses.

The node hands over what it knows (its configuration or why there is none, its lifecycle
state, each camera's statistics); this module decides the level and message and formats
the values, as diagnostic_updater names and lays them out. Counted trouble (rejected
messages, failed frames, slow frames) raises a WARN only while it is recent (the
statistics' window, the node's diagnostics_window): the totals stay in the values, the
level says what is wrong now.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

# WARN after this many diagnostics periods without an image.
SILENT_PERIODS = 3
# Falling behind: the recent frames take longer than BEHIND_PERIODS input periods and
# than BEHIND_S seconds (a camera faster than the network is normal: the newest frame
# wins and the others are dropped; outputs seconds late are not).
BEHIND_PERIODS = 2.0
BEHIND_S = 1.0


@dataclass
class NodeHealth:
    """What the node's status is made of."""

    name: str                      # the node's name (status names start with it)
    fully_qualified_name: str
    hardware_id: str               # the backend, or "none"
    state: str                     # the lifecycle state's label
    config: object | None          # NodeConfig; None: bad parameters
    config_error: str | None
    load_error: str | None         # why the last configure failed
    listening_since: float         # monotonic time of activation
    multi: bool                    # several cameras: one more status per camera
    engines: object | None = None  # EngineBuilds of the configured pipeline
    fused_problem: str | None = None  # why the fused grids are all unknown
    bond: str = "none"             # the lifecycle manager's bond (ManagerBond.describe)
    bond_problem: str | None = None   # a formed bond broke: the manager died or stopped


def camera_problem(camera, config, listening_since: float) -> str | None:
    """What is wrong with one active camera's input or grids, or None."""
    build = camera.engine_build
    if build is not None:
        state = build.state
        if state == "failed":
            return f"engine for {build.describe()}: {build.progress()}; its frames are dropped"
        if state == "queued":
            return (f"engine for {build.describe()} waits for another build "
                    f"({build.progress()}): its frames are dropped until it is ready")
        if state == "building":
            return (f"building engine for {build.describe()} ({build.progress()}): its "
                    "frames are dropped until it is ready")
    if camera.watch is not None and (lost := camera.watch.problem(
            camera.image_sub.topic_name, camera.last_image, time.monotonic())):
        return lost  # a publisher is there: not the camera's silence
    silent = time.monotonic() - (camera.last_image or listening_since)
    topic = camera.topic("image/compressed" if config.use_compressed else "image")
    if silent > SILENT_PERIODS * config.diagnostics_period:
        return f"no image received on {topic} for {silent:.0f} s"
    unpaired = time.monotonic() - (camera.last_paired or listening_since)
    if camera.pairs is not None and unpaired > SILENT_PERIODS * config.diagnostics_period:
        return (f"no image on {topic} had a CameraInfo of its stamp on "
                f"{camera.topic('camera_info')} for {unpaired:.0f} s (camera_info_sync: exact): "
                "they are not processed")
    s = camera.stats.snapshot()
    problems = [f"no occupancy grids: {camera.grid_problem}"] if camera.grid_problem else []
    if not problems and camera.processor is not None and (
            refused := camera.processor.camera_info_problem):
        problems.append(f"no occupancy grids or 3D detections: CameraInfo refused: {refused}")
    problems += [text for text in (falling_behind(s), recent_trouble(s)) if text]
    return "; ".join(problems) or None


def falling_behind(s: dict) -> str | None:
    """Why the frames cannot keep up with the input (NodeStats.snapshot ``s``), or None:
    the frames processed within the window took (median), or the frame in process has
    taken so far, more than BEHIND_PERIODS input periods and BEHIND_S."""
    if s["input_rate_hz"] <= 0:  # no input to keep up with ("no image" says so)
        return None
    period = 1.0 / s["input_rate_hz"]
    limit = max(BEHIND_PERIODS * period, BEHIND_S)
    taken, so_far = s["recent_frame_median_ms"] / 1e3, s["in_flight_ms"] / 1e3
    if taken > limit and not so_far > taken:
        how = f"frames take {taken:.1f} s (median of the last {s['recent_s']:.0f} s)"
    elif so_far > limit:
        how = f"the frame in process has taken {so_far:.1f} s so far"
    else:
        return None
    return (f"falling behind: {how} against a {period:.2f} s input period; outputs come "
            "late and most frames are dropped")


def recent_trouble(s: dict) -> str | None:
    """The messages rejected and frames failed within the window, or None."""
    window = f"in the last {s['recent_s']:.0f} s"
    rejected = s["recent_rejected"]
    text = []
    if rejected:
        text.append(f"{sum(rejected.values())} messages rejected {window} "
                    f"({', '.join(sorted(rejected))})")
    if s["recent_errors"]:
        text.append(f"{s['recent_errors']} frames failed {window}")
    return "; ".join(text) or None


def health(node: NodeHealth, cameras) -> tuple[bytes, str]:
    """(level, message) of the node's status: the most serious problem first."""
    if node.config is None:
        return DiagnosticStatus.ERROR, f"bad parameters: {node.config_error}"
    if node.load_error is not None:
        return DiagnosticStatus.ERROR, f"model failed to load: {node.load_error}"
    if node.state != "active":
        return DiagnosticStatus.WARN, f"not active ({node.state})"
    # First: nothing restarts the stack now when something fails (Nav2's servers keep running).
    if node.bond_problem is not None:
        return DiagnosticStatus.WARN, f"lifecycle manager bond broken: {node.bond_problem}"
    for camera in cameras:
        if (problem := camera_problem(camera, node.config, node.listening_since)) is not None:
            return DiagnosticStatus.WARN, camera.says(problem)
    if node.fused_problem is not None:
        return DiagnosticStatus.WARN, f"fused grids all unknown: {node.fused_problem}"
    return DiagnosticStatus.OK, "ok"


def engine_values(engines) -> dict:
    """The engine builds: under way or queued, done, the latest one's duration, and the
    sizes whose last attempt failed (until one succeeds)."""
    if engines is None:
        return {}
    now = time.monotonic()
    values = {"engine_builds": "; ".join(f"{b.describe()} ({b.progress(now)})"
                                         for b in engines.current) or "none",
              "engines_built": engines.built}
    if engines.last is not None:
        values["last_engine_build"] = f"{engines.last.describe()} in {engines.last.seconds:.1f} s"
    if failing := engines.failing:
        values["engine_build_failures"] = "; ".join(f"{b.describe()}: {b.progress(now)}"
                                                    for b in failing)
    return values


def camera_values(camera, dropped: int) -> dict:
    """One camera's rates, latencies, drops and rejections."""
    s = camera.stats.snapshot()
    values = {
        "frames_received": s["frames_received"],
        "frames_processed": s["frames_processed"],
        "frames_dropped": dropped,
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
        # within the window that decides the level
        "recent_window_s": f"{s['recent_s']:g}",
        "rejected_recent": sum(s["recent_rejected"].values()),
        "errors_recent": s["recent_errors"],
        "camera_info": _camera_info_state(camera.processor),
    })
    if camera.pairs is not None:
        values["camera_info_sync"] = "exact (" + (
            "message_filters" if camera.pairs.library else "own pairing") + ")"
        values["frames_paired"] = camera.paired
    if camera.watch is not None:
        values.update(camera.watch.values())
    values.update({f"stage_{k}_ms": f"{v:.1f}" for k, v in s["stage_median_ms"].items()})
    values.update({f"rejected: {reason}": n for reason, n in s["rejected"].items()})
    values.update(s["problems"])
    return values


def _camera_info_state(processor) -> str:
    if processor is None or processor.camera_info is None:
        return "missing"
    refused = processor.camera_info_problem
    return f"refused: {refused}" if refused else "received"


def _status(name: str, hardware_id: str, level, message: str, values: dict) -> DiagnosticStatus:
    return DiagnosticStatus(name=name, hardware_id=hardware_id, level=level, message=message,
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])


def diagnostic_array(node: NodeHealth, cameras, dropped, batches, stamp) -> DiagnosticArray:
    """The node's status (and with several cameras the shared engine's values there and
    one status per camera). ``dropped[i]``: camera i's dropped frames; ``batches``:
    (frames, network ms) of recent network calls."""
    level, message = health(node, cameras)
    values = {"node": node.fully_qualified_name, "state": node.state,
              "backend": node.hardware_id, "lifecycle_manager_bond": node.bond,
              **engine_values(node.engines)}
    if node.fused_problem is not None:
        values["fused_grids"] = f"all unknown: {node.fused_problem}"
    statuses = []
    if not node.multi:
        values.update(camera_values(cameras[0], dropped[0]))
    else:
        values["cameras"] = ", ".join(camera.name for camera in cameras)
        values["batches_run"] = len(batches)
        if batches:
            values["batch_size_mean"] = f"{np.mean([n for n, _ in batches]):.2f}"
            values["network_median_ms"] = f"{np.median([ms for _, ms in batches]):.1f}"
        active = node.state == "active"
        for index, camera in enumerate(cameras):
            problem = camera_problem(camera, node.config, node.listening_since) if active else None
            camera_level = DiagnosticStatus.WARN if problem or not active else DiagnosticStatus.OK
            text = problem or ("ok" if active else f"not active ({node.state})")
            statuses.append(_status(f"{node.name}: camera {camera.name}", node.hardware_id,
                                    camera_level, text,
                                    {"node": node.fully_qualified_name, "camera": camera.name,
                                     **camera_values(camera, dropped[index])}))
    # Named as diagnostic_updater names its tasks; "node" tells namespaces apart.
    own = _status(f"{node.name}: perception", node.hardware_id, level, message, values)
    return DiagnosticArray(header=Header(stamp=stamp), status=[own, *statuses])
