"""`hybridnets infer` end to end: images, folders, videos, bad inputs."""
import pytest
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from conftest import REPO, match_detections
from hybridnets_ros.cli import main
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera

pytestmark = pytest.mark.slow  # whole CLI runs over images and videos, a console-script subprocess


def run(*args) -> int:
    return main([str(a) for a in args])


def test_infer_demo_images(tmp_path, demo_images, golden_weights, golden_case, capsys):
    out = tmp_path / "out"
    assert run("infer", demo_images[0].parent, "--weights", golden_weights, "--output", out,
               "--save-npz") == 0
    stems = sorted(p.stem for p in demo_images)
    assert sorted(p.stem for p in out.glob("*.jpg")) == stems
    assert sorted(p.stem for p in out.glob("*.npz")) == stems
    overlay = cv2.imread(str(out / "1.jpg"))
    assert overlay.shape == (720, 1280, 3)
    with np.load(out / "1.npz") as npz:
        assert npz["det_boxes_xyxy"].dtype == np.float32 and npz["det_scores"].dtype == np.float32
        assert npz["det_classes"].dtype == np.int64 and npz["seg_mask"].dtype == np.uint8
        match_detections(npz["det_boxes_xyxy"], npz["det_scores"], npz["det_classes"],
                         golden_case["det_boxes_xyxy"], golden_case["det_scores"],
                         golden_case["det_classes"])
        assert (npz["seg_mask"] == golden_case["seg_mask"]).mean() >= 0.999
    summary = capsys.readouterr().out
    assert "6 frames" in summary and "0 input(s) failed" in summary and "ms/frame" in summary


def test_infer_video(tmp_path, random_weights):
    scene = SyntheticRoad(default_camera(320, 180))
    video = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 180))
    for i in range(3):
        writer.write(scene.render(i / 10)[0])
    writer.release()
    out = tmp_path / "out"
    assert run("infer", video, "--weights", random_weights, "--output", out, "--save-npz") == 0
    capture = cv2.VideoCapture(str(out / "drive.mp4"))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames == 3
    assert sorted(p.name for p in out.glob("*.npz")) == [f"drive_{i:06d}.npz" for i in range(3)]


def test_bad_inputs_are_reported_and_skipped(tmp_path, random_weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    frame = SyntheticRoad(default_camera(256, 144)).render(0)[0]
    cv2.imwrite(str(folder / "good.jpg"), frame)
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "alpha.png"), cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA))
    (folder / "empty.jpg").write_bytes(b"")
    jpeg = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "notes.jpg").write_text("not an image")
    broken_video = folder / "broken.mp4"
    broken_video.write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    code = run("infer", folder, tmp_path / "missing.jpg", "--weights", random_weights,
               "--output", out)
    assert code == 1
    err = capsys.readouterr().err
    for reason in ("missing.jpg: no such file", "empty.jpg: empty (0 bytes)",
                   "truncated.jpg: truncated JPEG", "notes.jpg: cannot decode", "broken.mp4"):
        assert reason in err
    assert sorted(p.name for p in out.iterdir()) == ["alpha.jpg", "good.jpg", "grey.jpg"]


def test_no_weights_is_refused(tmp_path, isolated_cache, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((64, 64, 3), np.uint8))
    assert run("infer", image, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "no hybridnets weights" in err and "hybridnets download-weights" in err and "--random-weights" in err
    assert run("infer", image, "--weights", tmp_path / "absent.pth", "--output", tmp_path / "o") == 2
    assert "weights file not found" in capsys.readouterr().err


def test_console_script_with_random_weights(tmp_path, isolated_cache):
    image = tmp_path / "road.png"
    cv2.imwrite(str(image), SyntheticRoad(default_camera(320, 180)).render(0)[0])
    exe = Path(sys.executable).parent / "hybridnets"
    # torch: what is tested is the entry point, not an export into the empty cache
    proc = subprocess.run([str(exe), "infer", str(image), "--random-weights", "--backend", "torch",
                           "--output", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300,
                          cwd=REPO, env={**os.environ, "HYBRIDNETS_CACHE": str(isolated_cache)})
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr and "meaningless" in proc.stderr
    assert (tmp_path / "out" / "road.jpg").is_file()
    assert "1 frames" in proc.stdout
