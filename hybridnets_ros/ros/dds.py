"""The DDS settings a process of the graph starts with, set before rclpy creates its
participant, and what the node's /diagnostics say when camera frames are lost in transport.

Measured causes (docs/dds.md): a writer sends a reader on the same host its samples through
the writer's own shared-memory segment, and Fast DDS' default one (512 KiB) is smaller than
a camera frame, so a camera driver started with stock settings loses most frames there;
``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (TCP for data and endpoint discovery) under
localhost-only discovery took tens of seconds to discover a node, and sometimes never
delivered a message, and it exchanges no data with participants using other transports.

So the node takes config/fastdds_node.xml: its readers advertise only UDPv4 locators (every
writer sends it frames over UDP, into a large receive buffer) while its 64 MiB
shared-memory segment carries its outputs. Other processes of the project take
config/fastdds.xml (the same transports, readers reached through shared memory).
"""
from __future__ import annotations

import collections
import os
import xml.etree.ElementTree as ET
from collections.abc import MutableMapping
from pathlib import Path

from .resources import share_file

PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
PEER_PROFILE = "config/fastdds.xml"
NODE_PROFILE = "config/fastdds_node.xml"
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")

# A matched publisher whose frames do not arrive is named after NO_FRAME_S (diagnostics run
# once a second, so within 15 s of the match); frames lost at LOSS_FRACTION or more of those
# sent over LOSS_WINDOW_S are named too.
NO_FRAME_S = 10.0
LOSS_WINDOW_S = 10.0
LOSS_FRACTION = 0.2


def uses_fastdds(environ: MutableMapping[str, str]) -> bool:
    """Fast DDS is ROS 2's default middleware: an unset RMW_IMPLEMENTATION means it."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def localhost_only(environ: MutableMapping[str, str]) -> bool:
    return (environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "").upper() == "LOCALHOST"
            or environ.get("ROS_LOCALHOST_ONLY", "") == "1")


def rmem_max() -> int | None:
    """The kernel's cap on a socket's receive buffer (net.core.rmem_max), None if unknown."""
    try:
        return int(RMEM_MAX.read_text())
    except (OSError, ValueError):
        return None


def receive_buffer_request() -> int:
    """The UDP receive buffer the node's profile asks for (bytes)."""
    root = ET.parse(share_file(NODE_PROFILE)).getroot()
    return int(next(e.text for e in root.iter() if e.tag.endswith("receiveBufferSize")))


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def _receive_buffer() -> str:
    """The node's UDP receive buffer in words: what it asks for and what the kernel allows."""
    wanted, cap = receive_buffer_request(), rmem_max()
    if cap is None:
        return f"UDP receive buffer {_mib(wanted)} asked for, net.core.rmem_max unknown"
    if cap >= wanted:
        return f"UDP receive buffer {_mib(wanted)}"
    return (f"UDP receive buffer {_mib(cap)}: net.core.rmem_max caps the profile's "
            f"{_mib(wanted)}; best-effort 4K frames need it raised (sudo sysctl -w "
            f"net.core.rmem_max={wanted}) or reliable_qos:=true (docs/dds.md)")


def _participant_profile(path: str) -> str | None:
    """The name of the default participant profile in the XML file at ``path``: the shipped
    files are told apart by it wherever they were copied or installed."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return None
    return next((e.get("profile_name") for e in root.iter() if e.tag.endswith("participant")
                 and e.get("is_default_profile") == "true"), None)


def configure_dds(environ: MutableMapping[str, str] | None = None,
                  node: bool = False) -> list[tuple[str, str]]:
    """Sets the shipped profile in ``environ`` (default: this process's) where nothing else
    is configured: the node's own (``node``) or the one for the graph's other processes; the
    node also replaces the other one, inherited from a shell or the project's commands, by
    its own. Returns (level, message) pairs for the caller's log, level "info" or
    "warning". Must run before the first rclpy.init of the process."""
    environ = os.environ if environ is None else environ
    if not uses_fastdds(environ):
        return [("info", f"DDS: {environ['RMW_IMPLEMENTATION']} with its own settings (large "
                         "images need its socket or shared-memory limits raised: docs/dds.md)")]
    chosen = [name for name in PROFILE_VARIABLES if environ.get(name)]
    builtin = environ.get("FASTDDS_BUILTIN_TRANSPORTS", "")
    peer = share_file(PEER_PROFILE)
    if chosen and not (node and _participant_profile(environ[chosen[0]])
                       == _participant_profile(peer)):
        return [("info", f"DDS: Fast DDS profile from {chosen[0]}={environ[chosen[0]]}")]
    if builtin.upper().startswith("LARGE_DATA") and localhost_only(environ):
        return [("warning", "DDS: FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA with localhost-only "
                            "discovery loses large messages and discovers slowly (measured: "
                            "tens of seconds, some outputs never): unset it (docs/dds.md)")]
    if builtin:
        level = "info" if builtin.upper().startswith("LARGE_DATA") else "warning"
        note = ("" if level == "info" else ": images over 512 KiB written through Fast DDS' "
                "default shared memory are mostly lost (docs/dds.md)")
        return [(level, f"DDS: FASTDDS_BUILTIN_TRANSPORTS={builtin}{note}")]
    # Fast DDS 2.x (Humble) reads only the FASTRTPS_ name, 3.x warns that it is deprecated.
    variable = PROFILE_VARIABLES[environ.get("ROS_DISTRO", "") == "humble"]
    for name in chosen:  # the shipped peer profile, replaced by the node's
        del environ[name]
    if not node:
        environ[variable] = str(peer)
        return [("info", f"DDS: Fast DDS profile {peer} (shared memory for camera-sized "
                         "messages)")]
    environ[variable] = profile = str(share_file(NODE_PROFILE))
    return [("info", f"DDS: Fast DDS profile {profile}: camera frames received over UDP, "
                     f"outputs sent through shared memory; {_receive_buffer()}")]


def loss_advice(environ: MutableMapping[str, str] | None = None,
                reliable_qos: bool = False) -> str:
    """What to do about camera frames lost in DDS transport, for the node's DDS setting
    (after configure_dds) and its image QoS."""
    environ = os.environ if environ is None else environ
    if not uses_fastdds(environ):
        return (f"raise {environ['RMW_IMPLEMENTATION']}'s socket receive buffer or "
                "shared-memory limits (docs/dds.md)")
    chosen = [name for name in PROFILE_VARIABLES if environ.get(name)]
    if chosen and (_participant_profile(environ[chosen[0]])
                   == _participant_profile(share_file(NODE_PROFILE))):
        cap, wanted = rmem_max(), receive_buffer_request()
        fixes = []
        if cap is None or cap < wanted:
            fixes.append(f"raise net.core.rmem_max ({cap if cap is not None else 'unknown'} "
                         f"now: sudo sysctl -w net.core.rmem_max={wanted})")
        if not reliable_qos:  # measured with a 4 MiB buffer: 4K at 10 Hz 50 of 50 (3 of 50)
            fixes.append("set reliable_qos:=true (a reliable driver then resends what is lost)")
        last = "check that the driver can send to the node over UDPv4 (docs/dds.md)"
        return f"{', '.join(fixes)} or {last}" if fixes else last
    setting = (f"{chosen[0]}={environ[chosen[0]]}" if chosen
               else f"FASTDDS_BUILTIN_TRANSPORTS={environ.get('FASTDDS_BUILTIN_TRANSPORTS', '')}")
    return (f"with the node's own DDS setting ({setting}) a driver on this host may send "
            "frames through its shared memory, whose default 512 KiB segment loses them: unset "
            "it (the node then receives over UDP) or start the driver with "
            f"FASTDDS_DEFAULT_PROFILES_FILE={share_file(PEER_PROFILE)} (docs/dds.md)")


class InputWatch:
    """The matched publishers of one image subscription and the samples DDS reports lost on
    it, so that /diagnostics tell frames lost in DDS transport from a camera that sends
    nothing. Updated by the node's executor thread only (lost event, diagnostics timer)."""

    def __init__(self, advice: str):
        self.advice = advice
        self.lost = 0                            # DDS' running total (message_lost event)
        self.publishers = 0
        self.matched_since: float | None = None  # monotonic time the publishers appeared
        self._lost_at_match = 0
        # (time, frames received, frames lost) at each update: LOSS_WINDOW_S at 1 Hz and more
        self._history: collections.deque[tuple[float, int, int]] = collections.deque(maxlen=64)

    def on_lost(self, info) -> None:
        """The subscription's message_lost callback (QoSMessageLostInfo)."""
        self.lost = info.total_count

    def update(self, publishers: int, received: int, now: float) -> None:
        """Once per diagnostics period: matched publishers and frames received so far."""
        if publishers and not self.publishers:
            self.matched_since, self._lost_at_match = now, self.lost
        elif not publishers:
            self.matched_since = None
        self.publishers = publishers
        self._history.append((now, received, self.lost))

    def problem(self, topic: str, last_image: float | None, now: float) -> str | None:
        """Why frames of matched publishers do not arrive, or None."""
        if self.matched_since is None:
            return None
        waited = now - self.matched_since
        if (last_image is None or last_image < self.matched_since) and waited >= NO_FRAME_S:
            lost = self.lost - self._lost_at_match
            n = self.publishers
            return (f"{n} publisher{'s' if n > 1 else ''} matched on {topic} but no frame "
                    f"arrived in {waited:.0f} s"
                    + (f" ({lost} reported lost by DDS)" if lost else "")
                    + f": large frames are probably lost in DDS transport; {self.advice}")
        recent = [entry for entry in self._history if entry[0] >= now - LOSS_WINDOW_S]
        if len(recent) >= 2:
            (t0, received0, lost0), (t1, received1, lost1) = recent[0], recent[-1]
            lost = lost1 - lost0
            sent = received1 - received0 + lost
            if lost >= 3 and lost >= LOSS_FRACTION * sent:
                return (f"{lost} of {sent} frames on {topic} lost in DDS transport in the last "
                        f"{t1 - t0:.0f} s: {self.advice}")
        return None

    def values(self) -> dict:
        return {"image_publishers": self.publishers, "frames_lost_in_transport": self.lost}
