"""sensor_msgs images -> BGR arrays: encodings, padding, byte order, bad messages."""
import array

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from hybridnets_ros.ros.conversions import ImageConversionError, compressed_to_bgr, image_to_bgr

RNG = np.random.default_rng(0)
BGR = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def make(pixels: np.ndarray, encoding: str, step_pad: int = 0, bigendian: bool = False) -> Image:
    h, w = pixels.shape[:2]
    rows = pixels.reshape(h, -1).view(np.uint8) if pixels.dtype != np.uint8 else pixels.reshape(h, -1)
    padded = np.zeros((h, rows.shape[1] + step_pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    data = array.array("B")
    data.frombytes(padded.tobytes())
    return Image(height=h, width=w, encoding=encoding, is_bigendian=bigendian,
                 step=padded.shape[1], data=data)


@pytest.mark.parametrize("pad", [0, 7])
def test_bgr8_is_a_zero_copy_view(pad):
    msg = make(BGR, "bgr8", pad)
    out = image_to_bgr(msg)
    np.testing.assert_array_equal(out, BGR)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding, pixels", [
    ("rgb8", BGR[..., ::-1]), ("bgra8", cv2.cvtColor(BGR, cv2.COLOR_BGR2BGRA)),
    ("rgba8", cv2.cvtColor(BGR, cv2.COLOR_BGR2RGBA)),
])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings(encoding, pixels, pad):
    np.testing.assert_array_equal(image_to_bgr(make(np.ascontiguousarray(pixels), encoding, pad)), BGR)


def test_mono8():
    grey = BGR[..., 0].copy()
    out = image_to_bgr(make(grey[..., None], "mono8", 5))
    assert out.shape == (6, 8, 3) and np.all(out == grey[..., None])


@pytest.mark.parametrize("encoding, to_yuv", [("yuv422", cv2.COLOR_BGR2YUV_UYVY),
                                              ("uyvy", cv2.COLOR_BGR2YUV_UYVY),
                                              ("yuyv", cv2.COLOR_BGR2YUV_YUYV),
                                              ("yuv422_yuy2", cv2.COLOR_BGR2YUV_YUYV)])
def test_packed_yuv(encoding, to_yuv):
    flat = np.full((6, 8, 3), (40, 120, 200), np.uint8)  # uniform: 4:2:2 loses nothing
    yuv = cv2.cvtColor(flat, to_yuv)
    out = image_to_bgr(make(yuv, encoding, 4))
    np.testing.assert_allclose(out.astype(int), flat.astype(int), atol=3)
    expected = cv2.cvtColor(yuv, {cv2.COLOR_BGR2YUV_UYVY: cv2.COLOR_YUV2BGR_UYVY,
                                  cv2.COLOR_BGR2YUV_YUYV: cv2.COLOR_YUV2BGR_YUYV}[to_yuv])
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("bigendian", [False, True])
def test_mono16_honours_byte_order(bigendian):
    values = RNG.integers(0, 65536, (6, 8), dtype=np.uint16)
    raw = values.astype(">u2" if bigendian else "<u2")
    out = image_to_bgr(make(raw[..., None], "mono16", 6, bigendian))
    assert np.all(out == (values >> 8).astype(np.uint8)[..., None])


@pytest.mark.parametrize("mutate, reason", [
    (lambda m: setattr(m, "encoding", "bayer_rggb8"), "unsupported encoding"),
    (lambda m: setattr(m, "data", m.data[:-10]), "data shorter than height*step"),
    (lambda m: setattr(m, "step", 10), "step too small"),
    (lambda m: (setattr(m, "width", 0), setattr(m, "height", 0)), "empty image"),
])
def test_bad_messages_name_the_problem(mutate, reason):
    msg = make(BGR, "bgr8")
    mutate(msg)
    with pytest.raises(ImageConversionError) as info:
        image_to_bgr(msg)
    assert info.value.reason == reason and str(info.value)


def test_odd_width_yuv_is_refused():
    with pytest.raises(ImageConversionError, match="even width"):
        image_to_bgr(make(np.zeros((2, 3, 2), np.uint8), "yuyv"))


def test_last_row_without_padding_is_accepted():
    msg = make(BGR, "bgr8", 5)
    msg.data = msg.data[:-5]  # (height - 1) * step + width * 3 bytes is enough
    np.testing.assert_array_equal(image_to_bgr(msg), BGR)


@pytest.mark.parametrize("fmt, ext", [("jpeg", ".jpg"), ("png", ".png"), ("rgb8; jpeg compressed bgr8", ".jpg")])
def test_compressed(fmt, ext):
    big = cv2.resize(BGR, (64, 48), interpolation=cv2.INTER_NEAREST)
    data = cv2.imencode(ext, big)[1].tobytes()
    out = compressed_to_bgr(CompressedImage(format=fmt, data=data))
    assert out.shape == (48, 64, 3)
    if ext == ".png":
        np.testing.assert_array_equal(out, big)


def test_bad_compressed():
    jpeg = cv2.imencode(".jpg", BGR)[1].tobytes()
    for data, message in ((jpeg[: len(jpeg) // 2], "truncated JPEG"), (b"garbage", "cannot decode"),
                          (b"", "empty")):
        with pytest.raises(ImageConversionError, match=message):
            compressed_to_bgr(CompressedImage(format="jpeg", data=data))
    with pytest.raises(ImageConversionError, match="unsupported compressed format"):
        compressed_to_bgr(CompressedImage(format="theora", data=jpeg))
