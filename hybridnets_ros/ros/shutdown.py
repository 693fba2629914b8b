"""SIGINT and SIGTERM end the node's process with exit status 0 (what ``ros2 launch`` expects
of a node it stops) within a bounded time, whatever the process is doing.

Python runs signal handlers in the main thread between bytecodes, so a Ctrl-C that arrives
while the main thread sits in a long native call (building an engine at configure, a
network forward) would wait for that call; launch then escalates to SIGTERM and SIGKILL.
Here Python's C-level handler writes each signal to a wakeup pipe the moment it arrives (in
whichever thread), and a watcher thread reading that pipe acts on it:

- during start-up (the imports of torch, cv2 and rclpy take seconds and nothing runs yet
  that needs an orderly stop) the process ends at once. That is why this module imports
  only the standard library and is installed first (``entry.py``, and the top of
  ``node.py`` for ``python -m``);
- once :meth:`BoundedShutdown.orderly` has named what starts the orderly stop (the node's:
  it wakes the main thread, which destroys the node between callbacks, so peers see it
  leave the graph at once, and shuts ROS down), the watcher starts it and, if the process
  has not left ``grace_s`` later, ends it itself.

The process always leaves through :meth:`BoundedShutdown.exit` (``os._exit`` after flushing
its logs), never through the interpreter's finalisation: native code may still run in other
threads (an engine build in its background thread: an ONNX export, an ONNX Runtime session,
an OpenVINO compile), and finalisation tears the interpreter and the C++ runtime down under
it, which aborts the process ("terminate called without an active exception", exit -6) or
waits for it.

What no Python code can bound: a native call that holds the interpreter lock (loading an
extension module, ONNX Runtime creating a session, OpenVINO compiling) keeps the watcher
from running until it returns (docs/dds.md#shutdown has the measured delays).
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import NoReturn

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BoundedShutdown:
    def __init__(self, grace_s: float = 0.5):
        self._grace_s = grace_s
        self._on_signal: Callable[[], None] | None = None  # None: still starting up
        self._done = threading.Event()
        self.received: int | None = None

    def install(self) -> None:
        """Call from the main thread, before rclpy.init (which must not install its own)."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        for signum in SIGNALS:  # a Python handler, so that the C handler writes the pipe
            signal.signal(signum, lambda *_: None)
        threading.Thread(target=self._watch, args=(read_end,), name="signal-watcher",
                         daemon=True).start()

    def orderly(self, on_signal: Callable[[], None]) -> None:
        """From now on a signal calls ``on_signal``, and the process ends when the main
        thread has called :meth:`finished` (or ``grace_s`` has passed)."""
        self._on_signal = on_signal

    def finished(self) -> None:
        """The orderly stop is complete: the watcher may end the process."""
        self._done.set()

    def exit(self, code: int) -> NoReturn:
        """Ends the process with ``code`` once its logs are out (see the module doc: never
        through the interpreter's finalisation)."""
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or gone: nothing left to save
                pass
        ctypes.CDLL(None).fflush(None)  # C stdio: rcutils' console output when redirected
        os._exit(code)

    def _watch(self, read_end: int) -> None:
        self.received = os.read(read_end, 1)[0]
        if self._on_signal is not None:
            # In a thread of its own, so that one that blocks cannot hold the exit up.
            threading.Thread(target=self._on_signal, name="signal-shutdown", daemon=True).start()
            if not self._done.wait(self._grace_s):
                sys.stderr.write(f"{signal.Signals(self.received).name}: not stopped after "
                                 f"{self._grace_s:.1f} s, exiting now\n")
        self.exit(0)


_process: BoundedShutdown | None = None


def process_shutdown() -> BoundedShutdown:
    """The process's :class:`BoundedShutdown`, installed at the first call (from the main
    thread; the entry points call it first thing)."""
    global _process
    if _process is None:
        _process = BoundedShutdown()
        _process.install()
    return _process
