"""SIGINT and SIGTERM end the process within a bounded time, whatever it is doing.

Python runs signal handlers in the main thread between bytecodes, so a Ctrl-C that arrives
while the main thread sits in a long native call (building an engine at configure, a
network forward) waits for that call; launch then escalates to SIGTERM and SIGKILL. Here
Python's C-level handler writes each signal to a wakeup pipe the moment it arrives (in
whichever thread), and a watcher thread reading that pipe shuts ROS down (the executor
returns, the worker drops its frame) and, if the orderly exit has not finished after
``grace_s``, ends the process itself.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class BoundedShutdown:
    def __init__(self, on_signal: Callable[[], None], grace_s: float = 1.5):
        self._on_signal = on_signal
        self._grace_s = grace_s
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

    def finished(self) -> None:
        """The orderly exit is complete: the watcher need not force it."""
        self._done.set()

    def _watch(self, read_end: int) -> None:
        self.received = os.read(read_end, 1)[0]
        try:
            self._on_signal()
        finally:
            if not self._done.wait(self._grace_s):
                sys.stderr.write(f"{signal.Signals(self.received).name}: not stopped after "
                                 f"{self._grace_s:.1f} s, exiting now\n")
                sys.stderr.flush()
                os._exit(0)
