"""Images paired with the CameraInfo of the same stamp (``camera_info_sync: exact``).

image_transport's CameraSubscriber hands a callback an image only with the CameraInfo whose
stamp equals the image's, through message_filters' TimeSynchronizer (exact time, a queue
per topic). With ``exact`` the node does the same: each frame carries its own CameraInfo
into the worker, and an image whose CameraInfo never comes is not processed. The default,
``latest``, uses the newest CameraInfo for every image instead: it needs no stamps to match
and works with drivers that publish CameraInfo rarely or with other stamps.

message_filters is used where it is installed (every ROS install; the venv's test set-up);
where it is not, :class:`ExactPairs` applies the same rule (the node says which in its log).
Both see the same subscriptions: only the pairing differs.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from .messages import stamp_ns

QUEUE_SIZE = 10  # messages per topic waiting for their partner, as CameraSubscriber's


class ExactPairs:
    """Image (input 0) and CameraInfo (input 1) of equal stamps, for ``on_pair(image, info)``.
    Each input keeps its newest ``queue_size`` unpaired messages; a pair is handed on once."""

    library = False

    def __init__(self, on_pair: Callable, queue_size: int = QUEUE_SIZE):
        self._on_pair = on_pair
        self._queue_size = queue_size
        self._waiting: tuple[dict, dict] = ({}, {})  # stamp (ns) -> message, in arrival order
        self._lock = threading.Lock()

    def add(self, index: int, msg) -> None:
        stamp = stamp_ns(msg.header)
        with self._lock:
            partner = self._waiting[1 - index].pop(stamp, None)
            if partner is None:
                mine = self._waiting[index]
                mine[stamp] = msg
                if len(mine) > self._queue_size:
                    del mine[min(mine)]
                return
        self._on_pair(*((msg, partner) if index == 0 else (partner, msg)))


class _LibraryPairs:
    """message_filters' TimeSynchronizer fed from the node's own subscriptions."""

    library = True

    def __init__(self, message_filters, on_pair: Callable, queue_size: int):
        self._inputs = (message_filters.SimpleFilter(), message_filters.SimpleFilter())
        self._sync = message_filters.TimeSynchronizer(self._inputs, queue_size)
        self._sync.registerCallback(on_pair)

    def add(self, index: int, msg) -> None:
        self._inputs[index].signalMessage(msg)


def import_message_filters():
    """message_filters, or None where it is not installed."""
    try:
        import message_filters
    except ImportError:
        return None
    return message_filters


def exact_pairs(on_pair: Callable, queue_size: int = QUEUE_SIZE, library: bool = True):
    """A pairer with ``add(index, msg)`` (0: image, 1: CameraInfo) calling
    ``on_pair(image, info)``: message_filters' TimeSynchronizer when ``library`` and it is
    installed, else :class:`ExactPairs`. ``.library`` says which."""
    message_filters = import_message_filters() if library else None
    if message_filters is None:
        return ExactPairs(on_pair, queue_size)
    return _LibraryPairs(message_filters, on_pair, queue_size)
