"""Engines for new input sizes, built in a background thread while the others keep running.

A static-shape backend builds an engine (ONNX export and session, compiled model, trace)
for every network input size and batch it meets: seconds to minutes. Built at the first
frame that needs it, inside the frame's path, it would hold every camera's frames behind
one camera's new size. :class:`EngineBuilds` sorts a batch of frames into those whose
engine exists (they run now) and those that wait for a build (the caller drops them:
latest frame wins, so there is no backlog when the engine is ready), and builds one engine
at a time beside them. Backends that cannot build beside inference
(``Backend.builds_beside_inference``) build in the caller's thread instead, still reported.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.memory import release_freed_memory
from .pipeline import Pipeline


@dataclass
class EngineBuild:
    """One engine being built (or built, or failed)."""

    shape: tuple[int, int, int]     # (batch, H, W) at the network input
    image_hw: tuple[int, int]       # the image size that first needed it
    started: float                  # time.monotonic() when asked for, then when begun
    seconds: float | None = None    # how long it took, once done
    error: str | None = None        # why it failed

    @property
    def done(self) -> bool:
        return self.seconds is not None

    def describe(self) -> str:
        """"640x480, batch 2" (the image size, as cameras and users know it)."""
        return f"{self.image_hw[1]}x{self.image_hw[0]}, batch {self.shape[0]}"


class EngineBuilds:
    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        self._lock = threading.Lock()
        self._wanted: dict[tuple[int, int, int], EngineBuild] = {}  # asked for, not done
        self._failed: dict[tuple[int, int, int], EngineBuild] = {}
        self._finished: collections.deque[EngineBuild] = collections.deque()
        self.last: EngineBuild | None = None   # the latest finished build
        self.built = 0
        self._thread: threading.Thread | None = None

    def split(self, bgrs: Sequence[np.ndarray]) -> tuple[list[int], dict[int, EngineBuild],
                                                          list[EngineBuild]]:
        """(indices of the frames that run now, the build each other frame waits for, the
        builds this call started). Frames of a failed build wait for it too (its
        ``error`` says why); it is not tried again."""
        backend = self.pipeline.backend
        ready, waiting, started = list(range(len(bgrs))), {}, []
        while ready:  # dropping a frame can change how the others batch: plan again
            shapes = self.pipeline.engine_shapes([bgrs[i].shape[:2] for i in ready])
            missing = [(i, shape) for i, shape in zip(ready, shapes)
                       if not backend.has_engine(shape)]
            if not missing:
                break
            for i, shape in missing:
                build, new = self._request(shape, bgrs[i].shape[:2])
                waiting[i] = build
                if new:
                    started.append(build)
            ready = [i for i in ready if i not in waiting]
        if started and not backend.builds_beside_inference:
            self._build_all()  # here and now: the caller is blocked, and says so
        return ready, waiting, started

    @property
    def current(self) -> list[EngineBuild]:
        """The builds asked for and not done, oldest first."""
        with self._lock:
            return list(self._wanted.values())

    def finished(self) -> list[EngineBuild]:
        """The builds that finished (or failed) since the last call."""
        with self._lock:
            done, self._finished = list(self._finished), collections.deque()
            return done

    def close(self) -> None:
        """Builds nothing more (the one under way finishes in its thread)."""
        with self._lock:
            self._wanted.clear()

    def _request(self, shape, image_hw) -> tuple[EngineBuild, bool]:
        with self._lock:
            if shape in self._failed:
                return self._failed[shape], False
            if shape in self._wanted:
                return self._wanted[shape], False
            build = self._wanted[shape] = EngineBuild(shape, tuple(image_hw), time.monotonic())
            if self.pipeline.backend.builds_beside_inference and (
                    self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._build_all, name="engine-build",
                                                daemon=True)
                self._thread.start()
            return build, True

    def _build_all(self) -> None:
        """Builds what is wanted, oldest first, until nothing is."""
        while True:
            with self._lock:
                if not self._wanted:
                    self._thread = None
                    return
                build = next(iter(self._wanted.values()))
            batch, *hw = build.shape
            build.started = time.monotonic()  # the build itself, not its wait in the queue
            try:
                if batch == 1:
                    self.pipeline.backend.prepare(tuple(hw))
                else:
                    self.pipeline.backend.prepare(tuple(hw), batch)
            except Exception as exc:  # reported by the caller; the other sizes go on
                build.error = f"{type(exc).__name__}: {exc}"
            release_freed_memory()  # what the export or compiler left behind
            build.seconds = time.monotonic() - build.started
            with self._lock:
                self._wanted.pop(build.shape, None)
                if build.error is not None:
                    self._failed[build.shape] = build
                else:
                    self.built += 1
                    self.last = build
                self._finished.append(build)
