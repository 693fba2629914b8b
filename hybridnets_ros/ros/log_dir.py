"""Where ROS writes the node's log file, chosen before rclpy.init.

rcl creates a log file at rclpy.init in $ROS_LOG_DIR, else $ROS_HOME/log, else ~/.ros/log,
and init fails when it cannot ("Failed to create log directory"): with a read-only HOME (a
container, a system service) the node would die before it starts. Then the log file goes
to a new temporary directory instead, or, where nothing can be written, the node logs to
the console only; either way it says so.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from rclpy.logging import get_logging_directory

NO_LOG_FILE = ["--ros-args", "--disable-external-lib-logs"]  # rcl's console-only logging


def configure_log_dir() -> tuple[list[str], list[tuple[str, str]]]:
    """(arguments to add to rclpy.init's, (level, message) to log once the node's logger
    exists); sets ROS_LOG_DIR when rcl's own choice cannot be written."""
    wanted = get_logging_directory()  # rcl's rule, from the same environment
    problem = _unwritable(wanted)
    if problem is None:
        return [], [("info", f"log file in {wanted}")]
    where = "ROS_LOG_DIR" if os.environ.get("ROS_LOG_DIR") else (
        "ROS_HOME" if os.environ.get("ROS_HOME") else "HOME")
    try:
        fallback = tempfile.mkdtemp(prefix="hybridnets_node_log_")
    except OSError as exc:
        return NO_LOG_FILE, [("warning", f"no log file: cannot write ROS's log directory "
                                         f"{wanted} (from {where}: {problem}) nor a temporary "
                                         f"directory ({exc.strerror or exc}); logging to the "
                                         "console only (set ROS_LOG_DIR to a writable place)")]
    os.environ["ROS_LOG_DIR"] = fallback
    return [], [("warning", f"log file in {fallback}: ROS's log directory {wanted} (from "
                            f"{where}) cannot be written ({problem}); set ROS_LOG_DIR to "
                            "choose another")]


def _unwritable(path: Path) -> str | None:
    """Why rcl could not create its log file in ``path`` (None: it can)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None
