"""One model-building step at a time per process, whoever asks.

``torch.onnx.export`` keeps its state in module globals (``GLOBALS.in_onnx_export``): a
second export started in another thread while one runs fails ("GLOBALS.in_onnx_export must
be False") or breaks the first. TorchScript tracing runs while that flag may be set (a
network can branch on ``torch.onnx.is_in_onnx_export()``), torch2trt patches torch's
functions for the length of a conversion, and NNCF's quantisation is not documented as
thread-safe. The node builds engines in a background thread while a configure (a lifecycle
manager's restart), ``bench`` or ``export`` may build in another: each of those steps runs
inside :func:`exclusive`, so the second waits for the first instead of failing.
"""
from __future__ import annotations

import contextlib
import logging
import threading

log = logging.getLogger(__name__)

_LOCK = threading.RLock()  # re-entrant: a step may run another inside it


@contextlib.contextmanager
def exclusive(what: str):
    """Runs the block while no other thread of this process runs one (``what`` names it
    in the log line said when it has to wait)."""
    if not _LOCK.acquire(blocking=False):
        log.info("%s waits for the export or conversion under way in another thread "
                 "(they run one at a time)", what)
        _LOCK.acquire()
    try:
        yield
    finally:
        _LOCK.release()
