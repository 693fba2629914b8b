"""On-disk cache of derived models: per-shape ONNX exports, INT8 ONNX models, TensorRT and
torch2trt engines.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with, for
one input shape and precision, and it embeds the weights; an ONNX export embeds the
weights and the shape. So every cached file is identified by an :class:`EngineKey` holding
all of that. The file name carries a digest of the key (two machines sharing a cache folder
never collide) and a JSON sidecar holds the key itself and the file's sha256. A file is only
loaded when its sidecar names exactly the wanted key and the file still has the recorded
digest; anything else (stale, foreign, truncated, hand-copied) is rebuilt, and the log
says why.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineKey:
    kind: str                   # "onnx", "onnx-int8", "tensorrt", "torch2trt"
    input_hw: tuple[int, int]   # static network input (H, W)
    precision: str              # "fp32", "fp16", "int8"
    weights: str                # sha256 of the state_dict (weights_digest)
    runtime: str = ""           # what built it, e.g. "tensorrt 10.3.0"
    gpu: str = ""               # gpu_identity(); "" for portable files (ONNX)
    calibration: str = ""       # digest of the INT8 calibration frames; "" otherwise
    batch: int = 1              # static batch size (several cameras)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()

    def as_json(self) -> dict:
        data = asdict(self)
        data["input_hw"] = list(self.input_hw)
        if self.batch == 1:  # keys of batch 1 read as before batches existed: caches stay valid
            del data["batch"]
        return data

    def filename(self, suffix: str) -> str:
        h, w = self.input_hw
        batch = f"b{self.batch}-" if self.batch != 1 else ""
        return f"{self.kind}-{self.precision}-{batch}{h}x{w}-{self.digest()[:16]}{suffix}"


def weights_digest(model_or_state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state_dict (order-independent)."""
    state = (model_or_state.state_dict() if isinstance(model_or_state, torch.nn.Module)
             else model_or_state)
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # Byte view of any dtype (0-d tensors such as num_batches_tracked included).
        digest.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def gpu_identity(device: str | torch.device = "cuda") -> str:
    """The GPU an engine is built for: its name and compute capability."""
    index = torch.device(device).index or 0
    major, minor = torch.cuda.get_device_capability(index)
    return f"{torch.cuda.get_device_name(index)} (sm_{major}{minor})"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


# What a build leaves beside the final name: the file itself (mkstemp's "<name>.<random>.part")
# and what is written next to it (its sidecar, a quantiser's pre-processed copy).
_PART = re.compile(r"(?P<name>.+)\.[A-Za-z0-9_]+\.part(\..+)?")


_fallback_said = False


def default_root() -> Path:
    """The user's cache folder's ``engines``, or, where it cannot be written (a read-only
    HOME on a vehicle's image, a container), one in the temporary folder, said once: the
    engines are then rebuilt after a reboot instead of failing to build at all."""
    global _fallback_said
    from ..core.weights import cache_dir
    root = cache_dir() / "engines"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if os.access(root, os.W_OK | os.X_OK):
            return root
        problem = "not writable"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    fallback = Path(tempfile.gettempdir()) / f"hybridnets_ros-{os.getuid()}" / "engines"
    if not _fallback_said:
        _fallback_said = True
        log.warning("engine cache %s: %s; using %s instead (set HYBRIDNETS_CACHE to a "
                    "writable folder to keep engines across reboots)", root, problem, fallback)
    return fallback


class EngineCache:
    """A folder of built files, each with a ``.json`` sidecar (see the module doc)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_root()
        self.remove_leftovers()

    def path(self, key: EngineKey, suffix: str) -> Path:
        return self.root / key.filename(suffix)

    @staticmethod
    def sidecar(path: Path) -> Path:
        return path.with_name(path.name + ".json")

    @contextlib.contextmanager
    def locked(self, key: EngineKey, suffix: str) -> Iterator[None]:
        """Holds the exclusive lock of ``key``'s file (one build of it at a time, across
        threads and processes). Lookups and builds of that file run inside it."""
        with self._lock(self.path(key, suffix), wait=True):
            yield

    @contextlib.contextmanager
    def _lock(self, path: Path, wait: bool) -> Iterator[bool]:
        """flock of ``<path>.lock``: yields whether it is held (``wait=False``: False at
        once if another holds it). The holder removes the lock file before releasing it,
        so the folder keeps only the files; an acquirer whose lock file was removed
        meanwhile takes the new one. The kernel releases the lock of a process that
        dies. A cache folder this process cannot write is used without locks."""
        lock_path = path.with_name(path.name + ".lock")
        fd, held = None, False
        try:
            while not held:
                try:
                    self.root.mkdir(parents=True, exist_ok=True)
                    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
                except OSError as exc:
                    log.debug("cache %s not lockable (%s): used without a lock", self.root, exc)
                    break
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    if not wait:
                        break
                    log.info("waiting for the build of %s under way in another thread or "
                             "process", path.name)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    held = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    held = False
                if not held:  # its holder removed it meanwhile: lock the one there now
                    os.close(fd)
                    fd = None
            yield held or fd is None  # unlockable folder: go on without
        finally:
            if held:
                with contextlib.suppress(OSError):
                    lock_path.unlink()
            if fd is not None:
                os.close(fd)

    def remove_leftovers(self) -> None:
        """Removes what builds killed before they finished left behind (``.part`` files,
        what was written beside them, their lock files), except where a build of that key
        is under way in some thread or process (its lock is held)."""
        try:
            names = [p.name for p in self.root.iterdir()]
        except OSError:
            return  # no cache folder yet
        leftovers: dict[str, list[Path]] = {}
        for name in names:
            if (match := _PART.fullmatch(name)) is not None:
                leftovers.setdefault(match["name"], []).append(self.root / name)
            elif name.endswith(".lock"):  # its holder was killed: taking it removes it
                leftovers.setdefault(name.removesuffix(".lock"), [])
        for name, paths in leftovers.items():
            with self._lock(self.root / name, wait=False) as held:
                if not held:
                    continue  # being built right now
                removed = []
                for path in paths:
                    try:
                        path.unlink()
                        removed.append(path.name)
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        log.debug("cannot remove %s: %s", path, exc)
                if removed:
                    log.info("removed what an interrupted build left in %s: %s", self.root,
                             ", ".join(sorted(removed)))

    def lookup(self, key: EngineKey, suffix: str) -> Path | None:
        """The cached file for ``key`` if it is valid, else None (the reason is logged)."""
        path = self.path(key, suffix)
        if not path.exists():
            return None
        reason = self._invalid_reason(path, key)
        if reason is None:
            return path
        log.warning("not loading cached %s: %s; it will be rebuilt", path.name, reason)
        return None

    def read(self, key: EngineKey, suffix: str) -> bytes | None:
        """The valid cached file's bytes for ``key``, checked against its sidecar as read
        (what is checked is what is used), else None (the reason is logged)."""
        path = self.path(key, suffix)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        reason = self._invalid_reason(path, key, hashlib.sha256(data).hexdigest())
        if reason is None:
            return data
        log.warning("not loading cached %s: %s; it will be rebuilt", path.name, reason)
        return None

    def _invalid_reason(self, path: Path, key: EngineKey, sha256: str | None = None) -> str | None:
        try:
            meta = json.loads(self.sidecar(path).read_text())
        except FileNotFoundError:
            return "no sidecar file with its key (not built by this cache)"
        except (OSError, ValueError) as exc:
            return f"unreadable sidecar ({exc})"
        recorded = meta.get("key") if isinstance(meta, dict) else None
        if recorded != key.as_json():
            recorded = recorded if isinstance(recorded, dict) else {}
            diffs = [f"{field} {recorded.get(field)!r} != {value!r}"
                     for field, value in key.as_json().items() if recorded.get(field) != value]
            return "built for another configuration: " + "; ".join(diffs)
        if meta.get("sha256") != (sha256 or file_digest(path)):
            return "file changed since it was built (sha256 differs from its sidecar's)"
        return None

    def store(self, key: EngineKey, suffix: str, build: Callable[[Path], None]) -> Path:
        """Run ``build(tmp_path)`` and move the result into place with its sidecar (call it
        inside :meth:`locked`).

        The file appears atomically: a crash or a concurrent reader never sees half of it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key, suffix)
        fd, tmp_name = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=self.root)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            build(tmp)
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise RuntimeError(f"building {path.name} produced no file")
            os.chmod(tmp, 0o644)  # mkstemp makes it private; cached files are not secrets
            meta = {"key": key.as_json(), "sha256": file_digest(tmp),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            # The sidecar goes first: a file without a matching sidecar is never loaded.
            sidecar_tmp = tmp.with_name(tmp.name + ".json")
            sidecar_tmp.write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(sidecar_tmp, self.sidecar(path))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
            tmp.with_name(tmp.name + ".json").unlink(missing_ok=True)
        return path

    def get_or_build(self, key: EngineKey, suffix: str, build: Callable[[Path], None],
                     what: str) -> Path:
        """The valid cached file for ``key``, building it (and logging the build) if needed."""
        with self.locked(key, suffix):
            path = self.lookup(key, suffix)
            if path is not None:
                log.info("using cached %s %s", what, path)
                return path
            h, w = key.input_hw
            log.info("building %s for input %dx%dx%d (%s); cached afterwards in %s", what,
                     key.batch, w, h, key.precision, self.root)
            started = time.monotonic()
            path = self.store(key, suffix, build)
        log.info("built %s in %.1f s: %s", what, time.monotonic() - started, path)
        return path

    def discard(self, path: Path) -> None:
        """Remove a cached file that turned out unusable (e.g. it failed to deserialize)."""
        path.unlink(missing_ok=True)
        self.sidecar(path).unlink(missing_ok=True)
