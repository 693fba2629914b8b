"""Engines for new input sizes, built in a background thread while the others keep running.

A static-shape backend builds an engine (ONNX export and session, compiled model, trace)
for every network input size and batch it meets: seconds to minutes. Built at the first
frame that needs it, inside the frame's path, it would hold every camera's frames behind
one camera's new size. :class:`EngineBuilds` sorts a batch of frames into those whose
engine exists (they run now) and those that wait for a build (the caller drops them:
latest frame wins, so there is no backlog when the engine is ready), and builds one engine
at a time beside them. Backends that cannot build beside inference
(``Backend.builds_beside_inference``) build in the caller's thread instead, still reported.

A build that fails is tried again at the first frame of its size after a back-off (2 s,
4 s, 8 s, ... at most a minute): a failure can be passing (memory, a cache folder not
writable yet, another process's lock), and one failure must not drop a camera for the
node's life. Its error stays readable (``EngineBuild.error``, ``EngineBuilds.failing``)
until a build of that size succeeds.
"""
from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..core.memory import release_freed_memory
from .pipeline import Pipeline

RETRY_FIRST_S = 2.0    # back-off after the first failure, doubled after each further one
RETRY_MAX_S = 60.0


@dataclass
class EngineBuild:
    """One engine's build: queued, building, built, or failed (and then maybe retried).

    The builder thread writes it while others read it: ``started`` is set before
    ``seconds`` is cleared, and ``error`` is cleared only on success, so a reader sees one
    of the states below, never a mix that says less than the truth.
    """

    shape: tuple[int, int, int]     # (batch, H, W) at the network input
    image_hw: tuple[int, int]       # the image size that first needed it
    queued: float                   # time.monotonic() when (last) asked for
    started: float | None = None    # when the current attempt began (None: still queued)
    seconds: float | None = None    # how long the last attempt took, once it ended
    error: str | None = None        # why the last attempt failed (kept while retrying)
    attempts: int = 0               # attempts begun
    retry_after: float = 0.0        # failed: no new attempt before this time.monotonic()

    @property
    def state(self) -> str:
        """"queued", "building", "built" or "failed"."""
        if self.started is None:
            return "queued"
        if self.seconds is None:
            return "building"
        return "built" if self.error is None else "failed"

    @property
    def done(self) -> bool:
        """Whether the last attempt ended (built or failed)."""
        return self.state in ("built", "failed")

    def describe(self) -> str:
        """"640x480, batch 2" (the image size, as cameras and users know it)."""
        return f"{self.image_hw[1]}x{self.image_hw[0]}, batch {self.shape[0]}"

    def progress(self, now: float | None = None) -> str:
        """Where it stands, in a few words: "building, 3 s so far", "queued for 2 s", ...
        The build's time counts from when it began, not from when it was queued."""
        now = time.monotonic() if now is None else now
        state = self.state
        if state == "queued":
            text = f"queued for {now - self.queued:.0f} s"
        elif state == "building":
            text = f"building, {now - self.started:.0f} s so far"
        elif state == "built":
            return f"built in {self.seconds:.1f} s"
        else:
            wait = self.retry_after - now
            return (f"attempt {self.attempts} failed after {self.seconds:.1f} s: {self.error}; "
                    + (f"next attempt in {wait:.0f} s" if wait > 0
                       else "next attempt at its next frame"))
        if self.attempts > 1 or (state == "queued" and self.error):
            text += f", attempt {self.attempts + (state == 'queued')}"
        if self.error:
            text += f"; the last one failed: {self.error}"
        return text


class EngineBuilds:
    def __init__(self, pipeline: Pipeline, retry_first_s: float = RETRY_FIRST_S,
                 retry_max_s: float = RETRY_MAX_S):
        self.pipeline = pipeline
        self.retry_first_s, self.retry_max_s = retry_first_s, retry_max_s
        self._lock = threading.Lock()
        self._wanted: dict[tuple[int, int, int], EngineBuild] = {}  # asked for, not done
        self._failed: dict[tuple[int, int, int], EngineBuild] = {}  # waiting to be retried
        self._finished: collections.deque[EngineBuild] = collections.deque()
        self.last: EngineBuild | None = None   # the latest successful build
        self.built = 0
        self._thread: threading.Thread | None = None

    def split(self, bgrs: Sequence[np.ndarray]) -> tuple[list[int], dict[int, EngineBuild],
                                                          list[EngineBuild]]:
        """(indices of the frames that run now, the build each other frame waits for, the
        builds this call started or started again). Frames of a failed build wait for it
        too (its ``error`` says why) until its back-off has passed; the first frame after
        that starts it again."""
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
        """The builds asked for and not done (queued or building), oldest first."""
        with self._lock:
            return list(self._wanted.values())

    @property
    def failing(self) -> list[EngineBuild]:
        """The sizes whose last attempt failed and that have not been built since (waiting
        for their next attempt, or in it)."""
        with self._lock:
            return [*self._failed.values(),
                    *(b for b in self._wanted.values() if b.error is not None)]

    def finished(self) -> list[EngineBuild]:
        """The attempts that ended (built or failed) since the last call, each once, as
        they ended (copies: a later attempt of the same size does not change them)."""
        with self._lock:
            done, self._finished = list(self._finished), collections.deque()
            return done

    def close(self) -> None:
        """Builds nothing more (the one under way finishes in its thread)."""
        with self._lock:
            self._wanted.clear()
            self._failed.clear()

    def _request(self, shape, image_hw) -> tuple[EngineBuild, bool]:
        with self._lock:
            if shape in self._wanted:
                return self._wanted[shape], False
            build = self._failed.get(shape)
            if build is not None:
                if time.monotonic() < build.retry_after:
                    return build, False
                del self._failed[shape]
                build.queued, build.started = time.monotonic(), None
            else:
                build = EngineBuild(shape, tuple(image_hw), time.monotonic())
            self._wanted[shape] = build
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
            build.attempts += 1
            build.started = time.monotonic()  # the build itself, not its wait in the queue
            build.seconds = None
            error = None
            try:
                if batch == 1:
                    self.pipeline.backend.prepare(tuple(hw))
                else:
                    self.pipeline.backend.prepare(tuple(hw), batch)
            except Exception as exc:  # reported by the caller; the other sizes go on
                error = f"{type(exc).__name__}: {exc}"
            release_freed_memory()  # what the export or compiler left behind
            with self._lock:
                build.retry_after = time.monotonic() + min(
                    self.retry_max_s, self.retry_first_s * 2 ** (build.attempts - 1))
                build.error = error
                build.seconds = time.monotonic() - build.started
                if self._wanted.pop(build.shape, None) is not None and error is not None:
                    self._failed[build.shape] = build  # (not if closed meanwhile)
                if error is None:
                    self.built += 1
                    self.last = build
                self._finished.append(replace(build))  # as this attempt ended
