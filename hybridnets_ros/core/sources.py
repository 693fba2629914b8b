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
    """An input that cannot be read; the message names the file and the reason, ``kind``
    says what is wrong in a few words (a category to count)."""

    def __init__(self, message: str, kind: str = "undecodable"):
        super().__init__(message)
        self.kind = kind


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


# Decoded pixels allowed per image by default: 4096x4096 (a 16.7 MP frame, 50 MB as BGR).
# A few hundred bytes of PNG can declare 16384x16384 (805 MB decoded), so the size is read
# from the header and refused before anything is decoded.
MAX_IMAGE_PIXELS = 4096 * 4096
# Smallest side and most elongated shape the network is run on: below/beyond these the
# letterbox squeezes the picture to nothing, and every new shape costs an engine.
MIN_IMAGE_SIDE = 32
MAX_ASPECT_RATIO = 8.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, extended, progressive, lossless; not DHT/JPG/DAC)
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def too_many_pixels(width: int, height: int, max_pixels: int) -> str | None:
    """Why a ``width`` x ``height`` image is refused for its pixel count (None: it is not)."""
    if width * height <= max_pixels:
        return None
    return (f"{width}x{height} = {width * height:,} pixels is more than the {max_pixels:,} "
            "allowed (max_image_pixels)")


def degenerate_shape(width: int, height: int) -> str | None:
    """Why the network is not run on a ``width`` x ``height`` image (None: it is)."""
    if min(width, height) < MIN_IMAGE_SIDE:
        return f"{width}x{height}: a side is smaller than {MIN_IMAGE_SIDE} pixels"
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return f"{width}x{height}: more elongated than {MAX_ASPECT_RATIO:g}:1"
    return None


def encoded_format(buf: np.ndarray) -> str | None:
    """"jpeg" or "png" by the data's magic bytes, else None."""
    head = buf[:8].tobytes()
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head == _PNG_SIGNATURE:
        return "png"
    return None


def encoded_size(buf: np.ndarray, fmt: str) -> tuple[int, int]:
    """(width, height) declared by a PNG's IHDR or a JPEG's frame header, read without
    decoding; raises ValueError when the header is missing or malformed."""
    if fmt == "png":
        if buf.size < 24 or buf[12:16].tobytes() != b"IHDR":
            raise ValueError("no PNG header (IHDR)")
        return int.from_bytes(buf[16:20].tobytes(), "big"), int.from_bytes(buf[20:24].tobytes(), "big")
    return _jpeg_frame(buf)[:2]


def _jpeg_frame(buf: np.ndarray) -> tuple[int, int, int]:
    """(width, height, offset after the frame header) from a JPEG's marker segments."""
    pos, size = 2, buf.size
    while pos + 4 <= size:
        if buf[pos] != 0xFF:
            raise ValueError(f"bad JPEG marker at byte {pos}")
        marker = int(buf[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # segments without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):
            break
        length = int(buf[pos + 2]) << 8 | int(buf[pos + 3])
        if marker in _JPEG_SOF:
            if length < 7 or pos + 9 > size:
                raise ValueError("truncated JPEG frame header")
            height = int(buf[pos + 5]) << 8 | int(buf[pos + 6])
            width = int(buf[pos + 7]) << 8 | int(buf[pos + 8])
            return width, height, pos + 2 + length
        if length < 2:
            raise ValueError(f"bad JPEG segment length at byte {pos}")
        pos += 2 + length
    raise ValueError("no JPEG frame header (SOFn) before the image data")


def decode_image(data: bytes | np.ndarray, name: str, max_pixels: int = MAX_IMAGE_PIXELS,
                 formats: tuple[str, ...] | None = None) -> np.ndarray:
    """Encoded image bytes -> BGR uint8 HxWx3 (grey and alpha inputs are converted).

    JPEG and PNG are sized from their header and refused above ``max_pixels`` before
    decoding; ``formats`` (e.g. ("jpeg",)) limits what the data may be, by its magic bytes.
    Other formats (files only: BMP, TIFF, WebP, ...) are checked after decoding.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else data
    if buf.size == 0:
        raise InputError(f"{name}: empty (0 bytes)")
    fmt = encoded_format(buf)
    if formats is not None and fmt not in formats:
        wanted = " or ".join(f.upper() for f in formats)
        if fmt is None:  # other formats (BMP, TIFF, WebP, ...) included: refused undecoded
            raise InputError(f"{name}: cannot decode: the data is not {wanted}")
        raise InputError(f"{name}: the data is {fmt.upper()}, not {wanted}",
                         "data does not match format")
    if fmt is not None:
        try:
            width, height = encoded_size(buf, fmt)
        except ValueError as exc:
            raise InputError(f"{name}: corrupt {fmt.upper()} ({exc})") from None
        if width == 0 or height == 0:
            raise InputError(f"{name}: the {fmt.upper()} header declares {width}x{height} pixels")
        if problem := too_many_pixels(width, height, max_pixels):
            raise InputError(f"{name}: {problem}", "image too large")
    # libjpeg decodes a cut-off JPEG into a partly grey picture with only a warning on
    # stderr; refuse it instead, recognised by the missing end-of-image marker (looked for
    # after the frame header, past any EXIF thumbnail and its own marker).
    if fmt == "jpeg" and b"\xff\xd9" not in buf[-64:].tobytes():
        if b"\xff\xd9" not in buf[_jpeg_frame(buf)[2]:].tobytes():
            raise InputError(f"{name}: truncated JPEG (no end-of-image marker)")
    try:
        image = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:  # e.g. a header beyond OpenCV's own limit of 2^30 pixels
        raise InputError(f"{name}: cannot decode ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise InputError(f"{name}: cannot decode (corrupt or not an image)")
    if problem := too_many_pixels(image.shape[1], image.shape[0], max_pixels):
        raise InputError(f"{name}: {problem}", "image too large")
    return image


def read_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path), max_pixels)


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
