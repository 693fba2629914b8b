"""The DDS settings a process of the graph starts with, set before rclpy creates its
participant: the shipped Fast DDS profile (config/fastdds.xml) unless the user chose their
own, and a warning for combinations known to starve large messages.

Measured causes (docs/dds.md): Fast DDS' default shared-memory segment (512 KiB) is smaller
than a camera frame, so frames go over fragmented best-effort UDP and most are lost;
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (TCP for data and endpoint discovery) under
localhost-only discovery took tens of seconds to discover a node, and sometimes never
delivered a message, and it exchanges no data with participants using other transports.
"""
from __future__ import annotations

import os
from collections.abc import MutableMapping

from .resources import share_file

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def uses_fastdds(environ: MutableMapping[str, str]) -> bool:
    """Fast DDS is ROS 2's default middleware: an unset RMW_IMPLEMENTATION means it."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def localhost_only(environ: MutableMapping[str, str]) -> bool:
    return (environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
            or environ.get("ROS_LOCALHOST_ONLY", "") == "1")


def configure_dds(environ: MutableMapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Sets the shipped profile in ``environ`` (default: this process's) where nothing else
    is configured; returns (level, message) pairs for the caller's log, level "info" or
    "warning". Must run before the first rclpy.init of the process."""
    environ = os.environ if environ is None else environ
    if not uses_fastdds(environ):
        return [("info", f"DDS: {environ['RMW_IMPLEMENTATION']} with its own settings (large "
                         "images need its socket or shared-memory limits raised: docs/dds.md)")]
    chosen = [name for name in PROFILE_VARIABLES if environ.get(name)]
    builtin = environ.get("FASTDDS_BUILTIN_TRANSPORTS", "")
    if chosen:
        return [("info", f"DDS: Fast DDS profile from {chosen[0]}={environ[chosen[0]]}")]
    if builtin.upper().startswith("LARGE_DATA") and localhost_only(environ):
        return [("warning", "DDS: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA with localhost-only "
                            "discovery loses large messages and discovers slowly (measured: "
                            "tens of seconds, some outputs never): unset it and use "
                            f"FASTDDS_DEFAULT_PROFILES_FILE={share_file('config/fastdds.xml')} "
                            "in every process (docs/dds.md)")]
    if builtin:
        level = "info" if builtin.upper().startswith("LARGE_DATA") else "warning"
        note = ("" if level == "info" else ": images over 512 KiB fall back to fragmented UDP "
                "and are mostly lost (docs/dds.md)")
        return [(level, f"DDS: FASTDDS_BUILTIN_TRANSPORTS={builtin}{note}")]
    profile = str(share_file("config/fastdds.xml"))
    # Fast DDS 2.x (Humble) reads only the FASTRTPS_ name, 3.x warns that it is deprecated.
    variable = PROFILE_VARIABLES[environ.get("ROS_DISTRO", "") == "humble"]
    environ[variable] = profile
    return [("info", f"DDS: Fast DDS profile {profile} (shared memory for camera-sized "
                     f"messages; set {variable} to it in the camera driver's and viewers' "
                     "shells too)")]
