"""sensor_msgs Image / CompressedImage -> BGR numpy, without cv_bridge.

cv_bridge is not installable in a pip environment and is no faster for these encodings,
so one implementation serves everywhere. Raw images are wrapped zero-copy (np.frombuffer
over the message buffer, honouring ``step`` padding); only encodings that are not BGR are
converted, by OpenCV.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..core.sources import MAX_IMAGE_PIXELS, InputError, decode_image, too_many_pixels


class ImageConversionError(InputError):
    """A message that cannot be turned into an image.

    ``reason`` is a short category (counted in diagnostics); the text has the details.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(detail, reason)
        self.reason = reason


# encoding -> (channels, bytes per channel, cv2 conversion to BGR or None)
_ENCODINGS = {
    "bgr8": (3, 1, None),
    "rgb8": (3, 1, cv2.COLOR_RGB2BGR),
    "bgra8": (4, 1, cv2.COLOR_BGRA2BGR),
    "rgba8": (4, 1, cv2.COLOR_RGBA2BGR),
    "mono8": (1, 1, cv2.COLOR_GRAY2BGR),
    "8uc1": (1, 1, cv2.COLOR_GRAY2BGR),
    "8uc3": (3, 1, None),
    "mono16": (1, 2, cv2.COLOR_GRAY2BGR),
    "bgr16": (3, 2, None),
    "rgb16": (3, 2, cv2.COLOR_RGB2BGR),
    # 4:2:2 packed, 2 bytes per pixel. ROS' "yuv422" is UYVY byte order.
    "yuv422": (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2BGR_UYVY),
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2BGR_YUYV),
    "yuyv": (2, 1, cv2.COLOR_YUV2BGR_YUYV),
}
SUPPORTED_ENCODINGS = tuple(_ENCODINGS)


def image_to_bgr(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A sensor_msgs/Image as a BGR uint8 array; a view of the message data when it is
    already bgr8 (valid while the message lives)."""
    encoding = msg.encoding.lower()
    if encoding not in _ENCODINGS:
        raise ImageConversionError("unsupported encoding", f"unsupported encoding '{msg.encoding}' (supported: "
                                   f"{', '.join(SUPPORTED_ENCODINGS)})")
    channels, depth, conversion = _ENCODINGS[encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageConversionError("empty image", f"empty image ({width}x{height})")
    if problem := too_many_pixels(width, height, max_pixels):
        raise ImageConversionError("image too large", problem)
    if encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv") and width % 2:
        raise ImageConversionError("odd width for 4:2:2", f"{encoding} needs an even width, got {width}")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageConversionError("step too small", f"step {step} is smaller than width*bytes per pixel ({row_bytes})")
    data = np.frombuffer(msg.data, np.uint8)
    needed = (height - 1) * step + row_bytes
    if data.size < needed:
        raise ImageConversionError("data shorter than height*step", f"data has {data.size} bytes, {width}x{height} {msg.encoding} "
                                   f"with step {step} needs {needed}")
    if depth == 1:
        pixels = np.lib.stride_tricks.as_strided(
            data, (height, width, channels), (step, channels, 1), writeable=False)
    else:  # 16-bit: honour the byte order, keep the high byte
        if step % 2:
            raise ImageConversionError("odd step for 16 bits", f"step {step} is odd for a 16-bit encoding")
        if data.size < height * step:  # the last row may omit its padding
            data = np.concatenate([data, np.zeros(height * step - data.size, np.uint8)])
        words = data[: height * step].view(">u2" if msg.is_bigendian else "<u2")
        words = words.reshape(height, step // 2)[:, : width * channels]
        pixels = (words >> 8).astype(np.uint8).reshape(height, width, channels)
    if conversion is None:
        return pixels
    if channels == 1:
        pixels = pixels[:, :, 0]
    elif channels == 2:
        pixels = np.ascontiguousarray(pixels)
    return cv2.cvtColor(pixels, conversion)


def to_bgr(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Either message type (rclpy or rosbags objects): CompressedImage has ``format``."""
    if hasattr(msg, "format"):
        return compressed_to_bgr(msg, max_pixels)
    return image_to_bgr(msg, max_pixels)


def compressed_to_bgr(msg, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A sensor_msgs/CompressedImage (jpeg or png) as a BGR uint8 array.

    The data must be what ``format`` says (image_transport writes e.g. "jpeg" or
    "bgr8; jpeg compressed bgr8"; an empty format admits either), and its header may
    declare at most ``max_pixels`` pixels: both are checked before decoding.
    """
    fmt = msg.format.lower()
    formats = tuple(name for name, words in (("jpeg", ("jpeg", "jpg")), ("png", ("png",)))
                    if any(word in fmt for word in words)) if fmt else ("jpeg", "png")
    if not formats:
        raise ImageConversionError("unsupported compressed format", f"unsupported compressed format '{msg.format}' (jpeg or png)")
    name = f"compressed image ({msg.format or 'no format'})"
    data = np.frombuffer(msg.data, np.uint8)
    try:
        return decode_image(data, name, max_pixels, formats)
    except InputError as exc:
        reason = exc.kind if exc.kind != "undecodable" else "undecodable compressed image"
        raise ImageConversionError(reason, str(exc)) from None
