"""Reading the CLI's inputs: image files, folders of images/videos, video files."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


class InputError(Exception):
    """An input that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "image" or "video"


def expand_sources(paths: list[str]) -> tuple[list[Source], list[str]]:
    """Files and folders (their images and videos, sorted, not recursive) -> sources.

    Returns the sources and one error message per path that is not usable.
    """
    sources, errors = [], []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = [Source(p, kind) for p in sorted(path.iterdir())
                     if p.is_file() and (kind := _kind(p))]
            if not found:
                errors.append(f"{path}: folder has no image or video files")
            sources += found
        elif path.is_file():
            sources.append(Source(path, _kind(path) or "image"))  # decoding decides
        else:
            errors.append(f"{path}: no such file or folder")
    return sources, errors


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "video" if suffix in VIDEO_SUFFIXES else None


def decode_image(data: bytes | np.ndarray, name: str) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 HxWx3 (grey and alpha inputs are converted)."""
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise InputError(f"{name}: empty (0 bytes)")
    # libjpeg decodes a cut-off JPEG into a partly grey picture with only a warning on
    # stderr; refuse it instead, recognised by the missing end-of-image marker.
    if buf[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in buf[-64:].tobytes():
        raise InputError(f"{name}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise InputError(f"{name}: cannot decode (corrupt or not an image)")
    return image


def read_image(path: Path) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path))


class VideoReader:
    """Frames of a video file; raises InputError if it cannot be opened."""

    def __init__(self, path: Path):
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise InputError(f"{path}: cannot open as a video")
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self.frame_count = max(0, int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT)))

    def __iter__(self) -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = self.capture.read()
                if not ok:
                    return
                yield frame
        finally:
            self.capture.release()


def count_frames(source: Source) -> int:
    if source.kind == "image":
        return 1
    capture = cv2.VideoCapture(str(source.path))
    try:
        return max(1, int(capture.get(cv2.CAP_PROP_FRAME_COUNT))) if capture.isOpened() else 1
    finally:
        capture.release()
