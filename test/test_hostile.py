"""Hostile and careless input (issue 9): decompression bombs, lying formats, degenerate
shapes, detection floods, lifecycle churn, bad CameraInfo, careless command lines.

The first tests are quick checks of the pieces; the slow ones go over the real paths: the
node over DDS (a fuzz of malformed messages, 30 lifecycle cycles, Ctrl-C under a frame),
the command line and bag files.
"""
from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest
import torch

from hybridnets_ros.backends import create_backend

from hybridnets_ros.core.registry import adapter
from hybridnets_ros.backends.base import ENGINES_KEPT
from hybridnets_ros.core.postprocess import CANDIDATES_PER_DETECTION
from hybridnets_ros.core.models.hybridnets.postprocess import detect
from hybridnets_ros.core.models.hybridnets.preprocess import letterbox as letterbox_of
from hybridnets_ros.core.sources import InputError
from hybridnets_ros.ros.conversions import ImageConversionError, compressed_to_bgr, image_to_bgr
from sensor_msgs.msg import CompressedImage, Image

HYBRIDNETS = adapter("hybridnets")


def png_declaring(width: int, height: int, rows: int | None = None) -> bytes:
    """A grey PNG whose header declares ``width`` x ``height``; ``rows`` of zeros are
    compressed into it (all of them by default: a real decompression bomb of a few hundred
    KB for 16384x16384)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer, row = zlib.compressobj(9), b"\0" * (width + 1)
    idat = b"".join(packer.compress(row) for _ in range(height if rows is None else rows))
    idat += packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small valid JPEG with its frame header changed to declare ``width`` x ``height``."""
    data = bytearray(cv2.imencode(".jpg", np.full((64, 64, 3), 100, np.uint8))[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def compressed(data: bytes, fmt: str = "jpeg") -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = data
    return msg


@pytest.mark.parametrize("data, fmt", [
    (png_declaring(16384, 16384, rows=4), "png"),      # 805 MB decoded as BGR
    (png_declaring(40000, 40000, rows=4), "png"),      # beyond OpenCV's 2^30: cv2.error before
    (jpeg_declaring(60000, 60000), "jpeg"),
])
def test_header_bombs_are_refused_before_decoding(data, fmt):
    with pytest.raises(ImageConversionError, match="max_image_pixels") as info:
        compressed_to_bgr(compressed(data, fmt))
    assert info.value.reason == "image too large"


def test_the_format_field_is_enforced_and_other_formats_refused():
    bgr = np.full((48, 64, 3), 90, np.uint8)
    png = cv2.imencode(".png", bgr)[1].tobytes()
    with pytest.raises(ImageConversionError, match="is PNG, not JPEG") as info:
        compressed_to_bgr(compressed(png, "jpeg"))
    assert info.value.reason == "data does not match format"
    for ext in (".bmp", ".tiff", ".ppm", ".webp"):
        with pytest.raises(ImageConversionError, match="not JPEG"):
            compressed_to_bgr(compressed(cv2.imencode(ext, bgr)[1].tobytes(), "jpeg"))
    assert compressed_to_bgr(compressed(png, "png")).shape == (48, 64, 3)
    assert compressed_to_bgr(compressed(png, "")).shape == (48, 64, 3)  # no format: either


def test_jpeg_with_bytes_after_its_end_marker_is_accepted():
    bgr = np.random.default_rng(1).integers(0, 256, (48, 64, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    plain = compressed_to_bgr(compressed(jpeg))
    for trailing in (b"\0" * 63, b"\0" * 200, bytes(range(256)) * 4):
        assert np.array_equal(compressed_to_bgr(compressed(jpeg + trailing)), plain)
    with pytest.raises(ImageConversionError, match="truncated JPEG"):
        compressed_to_bgr(compressed(jpeg[: len(jpeg) * 2 // 3]))


def test_a_raw_image_over_the_limit_is_refused_without_touching_its_pixels():
    msg = Image(height=4097, width=4097, encoding="mono8", step=4097)  # no data at all
    with pytest.raises(ImageConversionError, match="max_image_pixels") as info:
        image_to_bgr(msg)
    assert info.value.reason == "image too large"
    msg = Image(height=40, width=50, encoding="mono8", step=50)
    msg.data = bytes(2000)
    with pytest.raises(ImageConversionError, match="max_image_pixels"):
        image_to_bgr(msg, max_pixels=1999)


@pytest.mark.parametrize("hw", [(1, 1), (1, 65535), (31, 640), (100, 801)])
def test_degenerate_shapes_never_reach_the_backend(hybridnets_module, hw):
    from hybridnets_ros.pipeline.pipeline import Pipeline
    backend = create_backend("torch", hybridnets_module, HYBRIDNETS, optimize=False)
    pipeline = Pipeline(backend)
    with pytest.raises(InputError, match="unsupported image size") as info:
        pipeline(np.zeros((*hw, 3), np.uint8))
    assert info.value.kind == "unsupported image size"
    assert len(backend.engines) == 0


def test_engines_per_shape_are_bounded(hybridnets_module):
    backend = create_backend("torch", hybridnets_module, HYBRIDNETS, optimize=False)
    shapes = [(128, 640), (256, 640), (384, 640), (512, 640), (640, 640)]
    for hw in shapes:
        backend.prepare(hw)
    keys = [(1, *hw) for hw in shapes]  # (batch, height, width)
    assert list(backend.engines) == keys[-ENGINES_KEPT:]
    assert ENGINES_KEPT == 3
    backend.prepare(shapes[2])  # used again: now the most recent
    backend.prepare(shapes[0])  # so the least recent, shapes[3], goes
    assert list(backend.engines) == [keys[4], keys[2], keys[0]]


def test_max_detections_caps_nms_and_is_exact_when_reached():
    rng = torch.Generator().manual_seed(0)
    n = 46_035  # every anchor of a 640x384 input
    anchors_xy = torch.rand(n, 2, generator=rng) * torch.tensor([384.0, 640.0])
    anchors = torch.cat([anchors_xy, anchors_xy + 20 + 40 * torch.rand(n, 2, generator=rng)], 1)
    regression = 0.1 * torch.randn(n, 4, generator=rng)
    classification = torch.rand(n, 1, generator=rng)
    letterbox = letterbox_of((384, 640), 640, 128)
    full = detect(regression, classification, anchors, letterbox, 0.0, 0.3, max_detections=n)
    for k in (1, 10, 100):
        capped = detect(regression, classification, anchors, letterbox, 0.0, 0.3, max_detections=k)
        assert len(capped) == k  # NMS keeps far more than k among the 30k best candidates
        np.testing.assert_array_equal(capped.scores, full.scores[:k])
        np.testing.assert_array_equal(capped.boxes, full.boxes[:k])
    # iou 1.0 suppresses nothing: the cut is what bounds the work
    started = time.monotonic()
    everything = detect(regression, classification, anchors, letterbox, 0.0, 1.0)
    assert len(everything) == 100 and time.monotonic() - started < 30
    # not reached: exactly the uncapped result
    strict = detect(regression, classification, anchors, letterbox, 0.9995, 0.3)
    assert 0 < len(strict) < 100 and len(strict) < 100 * CANDIDATES_PER_DETECTION
    reference = detect(regression, classification, anchors, letterbox, 0.9995, 0.3, max_detections=n)
    np.testing.assert_array_equal(strict.scores, reference.scores)


# ---------------------------------------------------------------- the node over DDS (slow)

def _bomb_png() -> bytes:
    return png_declaring(16384, 16384)  # ~260 KB that decodes to 805 MB


def _malformed_images(rng: np.random.Generator, count: int) -> list[tuple[Image, str]]:
    """Raw images that must each be rejected, with the reason the node counts."""
    import ros_graph as rg
    cases = []
    for i in range(count):
        kind = i % 7
        if kind == 0:
            msg = rg.image_msg(np.zeros((8, 8, 3), np.uint8), 0)
            msg.encoding = str(rng.choice(["bayer_rggb8", "32FC1", "", "BGR8X", "jpeg"]))
            reason = "unsupported encoding" if msg.encoding.lower() not in ("bgr8",) else None
        elif kind == 1:
            msg = rg.image_msg(np.zeros((int(rng.integers(32, 200)), 64, 3), np.uint8), 0)
            msg.data = msg.data[: int(rng.integers(0, len(msg.data)))]
            reason = "data shorter than height*step"
        elif kind == 2:
            msg = rg.image_msg(np.zeros((16, 16, 3), np.uint8), 0)
            msg.step = int(rng.integers(0, 47))
            reason = "step too small"
        elif kind == 3:
            msg = Image(height=0, width=int(rng.integers(0, 5)), encoding="bgr8")
            reason = "empty image"
        elif kind == 4:  # a header declaring gigapixels over a few bytes
            msg = Image(height=int(rng.integers(5000, 65535)), width=int(rng.integers(5000, 65535)),
                        encoding="mono8", step=65535)
            msg.data = bytes(16)
            reason = "image too large"
        elif kind == 5:  # valid data, degenerate shapes: 1x1, 65535x1, a sliver
            h, w = [(1, 1), (1, 4000), (20, 640), (33, 800)][i % 4]
            msg = rg.image_msg(np.zeros((h, w), np.uint8), 0, encoding="mono8")
            reason = "unsupported image size"
        else:
            msg = rg.image_msg(np.zeros((4, 5, 2), np.uint8), 0, encoding="yuyv")
            reason = "odd width for 4:2:2"
        cases.append((msg, reason))
    return cases


def _malformed_compressed(rng: np.random.Generator, count: int) -> list[tuple[CompressedImage, str]]:
    good = cv2.imencode(".jpg", np.full((64, 64, 3), 100, np.uint8))[1].tobytes()
    png = cv2.imencode(".png", np.full((64, 64, 3), 100, np.uint8))[1].tobytes()
    bmp = cv2.imencode(".bmp", np.full((64, 64, 3), 100, np.uint8))[1].tobytes()
    bomb = _bomb_png()
    cases = []
    for i in range(count):
        kind = i % 8
        if kind == 0:
            data, fmt, reason = good[: int(rng.integers(3, len(good) - 10))], "jpeg", "undecodable compressed image"
        elif kind == 1:
            data, fmt, reason = rng.bytes(int(rng.integers(0, 3000))), "jpeg", "undecodable compressed image"
        elif kind == 2:
            data, fmt, reason = png, "jpeg", "data does not match format"
        elif kind == 3:
            data, fmt, reason = bmp, "jpeg", "undecodable compressed image"
        elif kind == 4:
            data, fmt, reason = bomb, "png", "image too large"
        elif kind == 5:
            data, fmt, reason = jpeg_declaring(int(rng.integers(20000, 65535)), 40000), "jpeg", "image too large"
        elif kind == 6:
            data, fmt, reason = good, str(rng.choice(["tiff", "rvl", "16UC1; compressedDepth"])), \
                "unsupported compressed format"
        else:  # a valid 64x16 JPEG: a sliver, refused before the network
            data = cv2.imencode(".jpg", np.full((16, 64, 3), 90, np.uint8))[1].tobytes()
            fmt, reason = "jpeg", "unsupported image size"
        cases.append((compressed(data, fmt), reason))
    return cases


def _malformed_camera_infos(rng: np.random.Generator, count: int, K):
    import ros_graph as rg
    infos = []
    for i in range(count):
        info = rg.camera_info_msg(K, 1280, 720, 0)
        kind = i % 4
        if kind == 0:
            info.d = [0.01] * int(rng.choice([1, 6, 15, 1000, 100_000]))
        elif kind == 1:
            info.k[int(rng.integers(0, 9)) // 4 * 4] = float(rng.choice([np.nan, np.inf, 0.0, -5.0]))
        elif kind == 2:
            info.d = [float("nan")] * 5
        else:
            info.k = [0.0] * 9
        infos.append(info)
    return infos


def _diag_ints(values: dict) -> dict:
    return {k: int(v) for k, v in values.items() if v.lstrip("-").isdigit()}


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["raw", "compressed"])
def test_fuzz_node_survives_counts_and_stays_bounded(mode, tmp_path, random_weights):
    """About two thousand malformed messages at a running node: no crash, every received image
    accounted for (processed, dropped or rejected by reason), each bad CameraInfo counted,
    RSS bounded, and a valid frame afterwards still gives every output."""
    import ros_graph as rg
    from hybridnets_ros.core.synthetic import default_camera
    camera = default_camera()
    rg.init_rclpy()
    ns = f"fuzz_{mode}"
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights,
                                                  "use_compressed": str(mode == "compressed").lower()},
                          namespace=ns)
    probe = rg.Probe(namespace=ns)
    rng = np.random.default_rng(9)
    frame = np.full((720, 1280, 3), 110, np.uint8)
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()

    def send_valid(stamp):
        probe.info_pub.publish(rg.camera_info_msg(camera.K, 1280, 720, stamp))
        time.sleep(0.1)
        if mode == "raw":
            probe.image_pub.publish(rg.image_msg(frame, stamp))
        else:
            msg = compressed(jpeg)
            msg.header.frame_id = "camera_optical_frame"
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            probe.compressed_pub.publish(msg)
        assert probe.wait_for(lambda: len(probe.got(stamp)) == len(rg.OUTPUTS), 60), \
            f"got only {sorted(probe.got(stamp))}\n{node.log()}"

    try:
        probe.wait_ready(node, compressed=mode == "compressed")
        send_valid(5 * 10**9)
        time.sleep(1.5)
        before = _diag_ints(probe.latest_diagnostics())
        rss_before = node.rss_mb()
        images = (_malformed_images(rng, 1200) if mode == "raw" else _malformed_compressed(rng, 1200))
        infos = _malformed_camera_infos(rng, 600, camera.K)
        pub = probe.image_pub if mode == "raw" else probe.compressed_pub
        sent_by_reason: dict[str, int] = {}
        for i, (msg, reason) in enumerate(images):
            pub.publish(msg)
            sent_by_reason[reason] = sent_by_reason.get(reason, 0) + 1
            if i % 2 == 0:
                probe.info_pub.publish(infos[i // 2 % len(infos)])
            time.sleep(0.002)
        # the counts settle once the worker has been through what it was given
        settled = probe.wait_diagnostics(
            lambda d: int(d["frames_received"]) - before["frames_received"] >= 0.5 * len(images)
            and int(d["frames_received"]) == (int(d["frames_processed"]) + int(d["frames_dropped"])
                                              + int(d["rejected_total"]) - int(d.get("rejected: invalid camera_info", 0))
                                              + int(d["errors"]) + int(d["skipped_no_subscribers"])),
            timeout=60)
        after = _diag_ints(settled)
        assert node.alive(), node.log()
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        assert delta["errors"] == 0, node.log()
        for reason in sent_by_reason:
            assert 0 <= delta.get(f"rejected: {reason}", 0) <= sent_by_reason[reason], reason
        image_rejections = sum(v for k, v in delta.items() if k.startswith("rejected: ")
                               and k != "rejected: invalid camera_info")
        assert image_rejections + delta["frames_dropped"] == delta["frames_received"]
        assert delta["frames_processed"] == 0
        info_rejections = delta.get("rejected: invalid camera_info", 0)
        assert 0.8 * len(images) / 2 <= info_rejections <= len(images) / 2, info_rejections
        # the log says each reason once (written after the count that diagnostics report)
        reasons = len({k for k, v in after.items() if k.startswith("rejected: ") and v})
        assert rg.wait_for(lambda: node.log().count("rejected message: ") >= reasons, 30), \
            node.log()
        log = node.log()
        assert log.count("rejected message: ") == reasons, log
        send_valid(9 * 10**9)
        rss_after = node.rss_mb()
        print(f"\nfuzz {mode}: sent {len(images)} {'Image' if mode == 'raw' else 'CompressedImage'} "
              f"({sent_by_reason}) + {len(images) // 2} CameraInfo; received {delta['frames_received']} "
              f"images: rejected {image_rejections} (by reason "
              f"{ {k[10:]: v for k, v in delta.items() if k.startswith('rejected: ') and v and 'camera_info' not in k} }), "
              f"dropped while busy {delta['frames_dropped']}, errors {delta['errors']}; "
              f"CameraInfo rejected {info_rejections}; crashes 0; "
              f"RSS {rss_before:.0f} -> {rss_after:.0f} MB")
        assert rss_after - rss_before < 150, "memory grew during the fuzz"
        assert "Traceback" not in node.log()
    finally:
        probe.close()
        assert node.stop() == 0, node.log()


@pytest.mark.slow
def test_lifecycle_churn_rapid_requests_and_ctrl_c(tmp_path, random_weights):
    """15 cleanup/configure cycles keep RSS nearly flat; deactivate/activate requests sent
    without waiting are all answered; Ctrl-C under a frame in flight exits cleanly."""
    import ros_graph as rg
    from lifecycle_msgs.msg import Transition
    from hybridnets_ros.core.synthetic import default_camera
    rg.init_rclpy()
    node = rg.NodeProcess(tmp_path / "node.log", {"weights": random_weights}, namespace="churn")
    probe = rg.Probe(namespace="churn")
    lifecycle = rg.Lifecycle(probe, "/churn/hybridnets_node")
    request, transition = lifecycle.request, lifecycle.change
    frame = np.full((720, 1280, 3), 100, np.uint8)
    K = default_camera().K

    def one_frame(stamp: int) -> None:
        probe.wait_for(lambda: probe.image_pub.get_subscription_count() > 0, 10)
        time.sleep(0.3)
        probe.info_pub.publish(rg.camera_info_msg(K, 1280, 720, stamp))
        probe.image_pub.publish(rg.image_msg(frame, stamp))
        assert probe.wait_for(lambda: "detections" in probe.got(stamp), 60), node.log()

    try:
        probe.wait_ready(node)
        assert lifecycle.state() == "active"  # both lifecycle services answer
        one_frame(10**9)
        rss = [node.rss_mb()]
        started = time.monotonic()
        for cycle in range(15):
            assert transition(Transition.TRANSITION_DEACTIVATE)
            assert transition(Transition.TRANSITION_CLEANUP)
            assert transition(Transition.TRANSITION_CONFIGURE), node.log()
            assert transition(Transition.TRANSITION_ACTIVATE)
            if cycle % 3 == 2:
                one_frame((cycle + 2) * 10**9)
                rss.append(node.rss_mb())
        print(f"\n15 lifecycle cycles in {time.monotonic() - started:.0f} s: RSS every 3 cycles "
              f"{' '.join(f'{r:.0f}' for r in rss)} MB")
        # After the first cycles (allocator and engine caches warming up), the trend of the
        # last 12 (least squares over the samples every 3 cycles: RSS moves by +-30 MB
        # between samples). A configure that keeps its model or engine adds 50 MB or more
        # (HybridNets' weights alone are 50 MB); 1-4 MB per cycle remain (a lead for a
        # later issue, docs/benchmarks.md "Memory per image size").
        per_cycle = np.polyfit(np.arange(len(rss) - 1) * 3, rss[1:], 1)[0]
        assert per_cycle < 10, f"each configure keeps {per_cycle:.1f} MB"
        # deactivate and activate sent without waiting: both answered, in order, five times
        # (up to 10 requests may wait: the depth of rcl_lifecycle's services)
        for _ in range(5):
            futures = [request(Transition.TRANSITION_DEACTIVATE), request(Transition.TRANSITION_ACTIVATE)]
            assert probe.wait_for(lambda: all(f.done() for f in futures), 30), \
                f"{sum(not f.done() for f in futures)} of 2 requests unanswered"
            assert all(f.result().success for f in futures)
        one_frame(50 * 10**9)
        # Ctrl-C while a frame is in the network
        probe.image_pub.publish(rg.image_msg(frame, 51 * 10**9))
        time.sleep(0.15)
    finally:
        probe.close()
        code = node.stop()
    log = node.log()
    assert code == 0, log
    assert "RCLError" not in log and "Traceback" not in log and "processing failed" not in log, log


# ----------------------------------------------------------- command line and bags (slow)

@pytest.mark.slow
def test_careless_command_lines(tmp_path, random_weights, hybridnets_module, sample_images, capsys):
    from hybridnets_ros.cli import main
    from hybridnets_ros.tools.bags import BagReader

    def run(*args) -> int:
        return main([str(a) for a in args])

    model = ["--weights", random_weights, "--backend", "torch"]
    # infer: a bomb and a header beyond 2^30 are named and skipped, the other inputs done
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "a_bomb.png").write_bytes(_bomb_png())
    (inputs / "b_huge.jpg").write_bytes(jpeg_declaring(65000, 65000))
    jpeg = sample_images[0].read_bytes()
    (inputs / "c_trailing.jpg").write_bytes(jpeg + b"\0" * 100)
    out = tmp_path / "out"
    assert run("infer", inputs, "--output", out, *model) == 1
    err = capsys.readouterr().err
    assert "a_bomb.png: 16384x16384" in err and "b_huge.jpg: 65000x65000" in err, err
    assert [p.name for p in out.glob("*.jpg")] == ["c_trailing.jpg"]
    # --output naming a file, and a write that fails
    assert run("infer", sample_images[0], "--output", inputs / "a_bomb.png", *model) == 2
    assert "cannot use it as the output folder" in capsys.readouterr().err
    blocked = tmp_path / "blocked"
    (blocked / f"{sample_images[0].stem}.jpg").mkdir(parents=True)  # a folder where the overlay goes
    assert run("infer", sample_images[0], "--output", blocked, *model) == 1
    assert "cannot write" in capsys.readouterr().err
    # a checkpoint of NaN weights is refused
    nan_weights = tmp_path / "nan.pth"
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                for k, v in hybridnets_module.state_dict().items()}, nan_weights)
    assert run("infer", sample_images[0], "--output", out, "--weights", nan_weights,
               "--backend", "torch") == 2
    assert "NaN or Inf" in capsys.readouterr().err
    # make-bag: rates out of bounds, and a size mismatch leaves no partial bag behind
    for rate in ("1e-12", "nan", "inf", "1e9"):
        assert run("make-bag", sample_images[0].parent, "--out", tmp_path / "bag_rate",
                   "--rate", rate) == 2
        assert "rate must be within" in capsys.readouterr().err
        assert not (tmp_path / "bag_rate").exists()
    calib = tmp_path / "small.yaml"
    calib.write_text("image_width: 640\nimage_height: 360\ncamera_name: c\ncamera_matrix: "
                     "{rows: 3, cols: 3, data: [500, 0, 320, 0, 500, 180, 0, 0, 1]}\n"
                     "distortion_model: plumb_bob\ndistortion_coefficients: {rows: 1, cols: 5, "
                     "data: [0, 0, 0, 0, 0]}\n")
    bag = tmp_path / "bag"
    assert run("make-bag", sample_images[0].parent, "--out", bag, "--camera-info", calib) == 2
    assert "camera info 640x360" in capsys.readouterr().err and not bag.exists()
    # a bag with a bomb among its images: skipped, the rest replayed
    from hybridnets_ros.tools.bags import BagWriter
    from hybridnets_ros.tools.make_bag import IMAGE_TOPIC, INPUT_QOS
    with BagWriter(bag) as writer:
        for index, data in enumerate((jpeg, _bomb_png(), jpeg_declaring(65000, 65000), jpeg)):
            msg = compressed(data, "png" if index == 1 else "jpeg")
            msg.header.stamp.sec = index + 1
            writer.write(IMAGE_TOPIC + "/compressed", msg, (index + 1) * 10**9, INPUT_QOS)
    video = tmp_path / "new" / "folder" / "replay.mp4"
    assert run("replay", bag, "--out", tmp_path / "replayed", "--video", video, *model) == 0
    text = capsys.readouterr()
    assert "2 frames" in text.out and "2 images rejected" in text.out, text
    assert video.stat().st_size > 0
    with BagReader(tmp_path / "replayed") as reader:
        assert {t.name: t.count for t in reader.topics()}["/detections"] == 2


def test_the_cap_says_once_how_many_detections_it_dropped(caplog, monkeypatch):
    from hybridnets_ros.core.models.hybridnets import postprocess
    monkeypatch.setattr(postprocess._report_cap, "done", False)
    rng = torch.Generator().manual_seed(1)
    n = 2000
    anchors_xy = torch.rand(n, 2, generator=rng) * torch.tensor([384.0, 640.0])
    anchors = torch.cat([anchors_xy, anchors_xy + 10], 1)
    regression, classification = torch.zeros(n, 4), torch.rand(n, 1, generator=rng)
    letterbox = letterbox_of((384, 640), 640, 128)
    assert len(detect(regression, classification, anchors, letterbox, 0.0, 0.3, n)) > 100
    assert not [r for r in caplog.records if "max_detections" in r.getMessage()]
    for _ in range(3):
        assert len(detect(regression, classification, anchors, letterbox, 0.0, 0.3, 10)) == 10
    [record] = [r for r in caplog.records if "max_detections" in r.getMessage()]
    kept = int(record.getMessage().split("NMS kept ")[1].split()[0])
    assert kept > 10 and f"max_detections=10 dropped at least {kept - 10} " in record.getMessage()


@pytest.mark.parametrize("command", [["infer", "x.jpg"], ["replay", "in", "--out", "out"],
                                     ["fleet", "in", "--out", "out"],
                                     ["bench"]])
def test_max_detections_is_an_option_of_every_command_that_detects(command):
    from hybridnets_ros.cli import make_parser
    from hybridnets_ros.cli.common import CliError, config_from_options
    parser = make_parser()
    assert config_from_options(parser.parse_args(command)).max_detections == 100
    assert config_from_options(
        parser.parse_args([*command, "--max-detections", "250"])).max_detections == 250
    with pytest.raises(CliError, match="max_detections"):
        config_from_options(parser.parse_args([*command, "--max-detections", "0"]))
