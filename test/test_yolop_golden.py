"""YOLOP against the original implementation's outputs (shared/golden/yolop): checkpoint
layout and errors, pre-processing, raw outputs, detections, masks, the ONNX export, FLOPs."""
from __future__ import annotations

from functools import cache

import cv2
import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import DEMO_IMAGES, GOLDEN, _need, assert_static_onnx, export_and_run_onnx, load_npz
from hybridnets_ros.core.models import yolop

YOLOP_DIR = GOLDEN / "yolop"
CONF, IOU, SIZE = 0.25, 0.45, 640  # the case's (demo.py's defaults)
# The README's tolerances: about 1e-4 on the probabilities, masks equal up to a few tenths
# of a percent of the pixels (0.3 % of the pixels have a top-2 margin below 1e-3).
PROB_ATOL = 1e-4
BOX_ATOL_PX, BOX_RTOL = 1e-3, 1e-4  # det_raw's x, y, w, h: input pixels up to ~640
MAX_REL_L2 = 1e-5                   # input noise of 1e-5 moves the outputs by up to 1.8e-5
MAX_MASK_DIFFERENCE = 0.002         # fraction of pixels
SCORE_ATOL = 1e-5


@cache
def golden() -> dict[str, np.ndarray]:
    return load_npz(YOLOP_DIR / "case_shared.npz")


@pytest.fixture(scope="module")
def checkpoint():
    return _need(YOLOP_DIR / "yolop_random_seed0.pth")


@pytest.fixture(scope="module")
def model(checkpoint):
    return yolop.load_checkpoint(yolop.build_module(), checkpoint)


@pytest.fixture(scope="module")
def prepared():
    """(input tensor, letterbox) of the case's image, read as the original reads it."""
    image = cv2.imread(str(_need(DEMO_IMAGES / "1.jpg")),
                       cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    np.testing.assert_array_equal(image, golden()["input_bgr"])
    return yolop.preprocess(image, SIZE)


@pytest.fixture(scope="module")
def torch_outputs(model, prepared):
    with torch.inference_mode():
        return tuple(t.numpy() for t in model(torch.from_numpy(prepared[0])))


@pytest.fixture(scope="module")
def onnx_outputs(model, prepared, tmp_path_factory):
    """The static-shape opset-17 export of the case's input size, run by ONNX Runtime."""
    path = tmp_path_factory.mktemp("yolop-onnx") / "yolop.onnx"
    return export_and_run_onnx(model, prepared[0], path, yolop.OUTPUT_NAMES)


def assert_raw_outputs_match(det, drivable, lane):
    ref = golden()
    assert det.shape == ref["det_raw"].shape == (1, 15120, 6)
    np.testing.assert_allclose(det[..., :4], ref["det_raw"][..., :4], rtol=BOX_RTOL,
                               atol=BOX_ATOL_PX)
    np.testing.assert_allclose(det[..., 4:], ref["det_raw"][..., 4:], rtol=0, atol=PROB_ATOL)
    for ours, name in ((drivable, "da_seg_out"), (lane, "ll_seg_out")):
        assert ours.shape == ref[name].shape == (1, 2, 384, 640)
        np.testing.assert_allclose(ours, ref[name], rtol=0, atol=PROB_ATOL)
    for ours, name in ((det, "det_raw"), (drivable, "da_seg_out"), (lane, "ll_seg_out")):
        assert np.linalg.norm(ours - ref[name]) / np.linalg.norm(ref[name]) < MAX_REL_L2


def assert_detections_match(detections):
    ref = golden()
    assert len(detections) == len(ref["det_scores"]) == 51
    np.testing.assert_array_equal(detections.boxes, ref["det_boxes_xyxy"])
    np.testing.assert_allclose(detections.scores, ref["det_scores"], rtol=0, atol=SCORE_ATOL)
    np.testing.assert_array_equal(detections.classes, ref["det_classes"])


def assert_masks_match(drivable_mask, lane_mask):
    ref = golden()
    for ours, name in ((drivable_mask, "da_seg_mask"), (lane_mask, "ll_seg_mask")):
        assert ours.dtype == np.uint8 and ours.shape == ref[name].shape == (720, 1280)
        assert set(np.unique(ours)) <= {0, 1}
        assert (ours != ref[name]).mean() <= MAX_MASK_DIFFERENCE


def test_state_dict_layout_equals_released_checkpoint():
    lines = _need(YOLOP_DIR / "state_dict_keys.txt").read_text().splitlines()
    expected = [(key, [int(s) for s in shape.strip("[]").split(",") if s.strip()])
                for key, shape in (line.split("\t") for line in lines)]
    ours = [(key, list(value.shape)) for key, value in yolop.build_module().state_dict().items()]
    assert ours == expected and len(ours) == 542


def test_golden_checkpoint_loads_strictly(model):
    values = sum(v.numel() for v in model.state_dict().values())
    parameters = sum(p.numel() for p in model.parameters())
    assert (values, parameters) == (7_964_065, 7_940_846)
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_preprocess_is_the_originals_input_tensor(prepared):
    x, lb = prepared
    np.testing.assert_array_equal(x, golden()["input_tensor"])
    assert (lb.input_hw, lb.resized_hw, lb.pad_w, lb.pad_h) == ((384, 640), (360, 640), 0.0, 12.0)


def test_preprocessor_follows_the_image_size():
    """One Preprocessor for frames of several sizes: each gets its own geometry and border."""
    image = golden()["input_bgr"]
    preprocess = yolop.Preprocessor(SIZE)
    small, lb = preprocess(np.ascontiguousarray(image[:375, :1242]))
    assert small.shape == (1, 3, *lb.input_hw) == (1, 3, 224, 640)
    np.testing.assert_array_equal(small[0, :, :lb.top], np.broadcast_to(
        yolop.preprocess(np.full((32, 32, 3), 114, np.uint8), 32)[0][0, :, :1, :1],
        (3, lb.top, 640)))
    assert preprocess.input_hw((720, 1280)) == (384, 640)
    np.testing.assert_array_equal(preprocess(image)[0], golden()["input_tensor"])


@pytest.mark.parametrize("source_hw, size, resized_hw, input_hw, top_left", [
    ((720, 1280), 512, (288, 512), (288, 512), (0, 0)),
    ((480, 640), 640, (480, 640), (480, 640), (0, 0)),     # unchanged: no resize
    ((700, 1000), 640, (448, 640), (448, 640), (0, 0)),
    ((375, 1242), 640, (193, 640), (224, 640), (15, 0)),   # odd padding: 15 top, 16 bottom
    ((300, 400), 640, (480, 640), (480, 640), (0, 0)),     # up-scaling allowed
])
def test_letterbox_geometry(source_hw, size, resized_hw, input_hw, top_left):
    lb = yolop.letterbox(source_hw, size)
    assert (lb.resized_hw, lb.input_hw, (lb.top, lb.left)) == (resized_hw, input_hw, top_left)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="multiple of 32"):
        yolop.letterbox((720, 1280), 500)
    with pytest.raises(ValueError, match="uint8"):
        yolop.preprocess(np.zeros((64, 64, 3), np.float32))
    lb = yolop.letterbox((720, 1280), SIZE)
    with pytest.raises(ValueError, match=r"\[1, A, 6\]"):
        yolop.detect(np.zeros((1, 10, 7), np.float32), lb)
    with pytest.raises(ValueError, match="384, 640"):
        yolop.masks(np.zeros((1, 2, 288, 512), np.float32), np.zeros((1, 2, 288, 512), np.float32), lb)


def test_raw_outputs_match_golden(torch_outputs):
    assert_raw_outputs_match(*torch_outputs)


def test_postprocessing_of_own_outputs_matches_golden(torch_outputs, prepared):
    det, drivable, lane = torch_outputs
    lb = prepared[1]
    assert_detections_match(yolop.detect(det, lb, CONF, IOU))
    assert_masks_match(*yolop.masks(drivable, lane, lb))


def test_postprocessing_of_reference_outputs_is_exact(prepared):
    ref, lb = golden(), prepared[1]
    detections = yolop.detect(ref["det_raw"], lb, CONF, IOU)
    np.testing.assert_array_equal(detections.boxes, ref["det_boxes_xyxy"])
    np.testing.assert_array_equal(detections.scores, ref["det_scores"])
    drivable_mask, lane_mask = yolop.masks(ref["da_seg_out"], ref["ll_seg_out"], lb)
    np.testing.assert_array_equal(drivable_mask, ref["da_seg_mask"])
    np.testing.assert_array_equal(lane_mask, ref["ll_seg_mask"])


def test_candidate_cap_keeps_the_best_detections(prepared):
    """With fewer detections wanted, NMS sees only the best candidates: the result is the
    uncapped result's first ones."""
    ref, lb = golden(), prepared[1]
    capped = yolop.detect(ref["det_raw"], lb, CONF, IOU, max_detections=1)
    np.testing.assert_array_equal(capped.boxes, ref["det_boxes_xyxy"][:1])


def test_masks_have_the_image_size_where_the_original_factor_does_not_fit():
    """At 512 on 1280x720 the original's int(1 / 0.4) = 2 would give 576x1024."""
    lb = yolop.letterbox((720, 1280), 512)
    right_half = torch.zeros(*lb.input_hw)
    right_half[:, lb.input_hw[1] // 2:] = 1.0
    drivable = torch.stack((1 - right_half, right_half))[None]
    drivable_mask, lane_mask = yolop.masks(drivable, torch.zeros(1, 2, *lb.input_hw), lb)
    assert drivable_mask.shape == lane_mask.shape == (720, 1280)
    assert drivable_mask[:, :640].sum() == 0 and drivable_mask[:, 640:].all()
    assert lane_mask.sum() == 0  # exact ties are background


def test_onnx_export_is_static_opset_17(onnx_outputs):
    proto, _ = onnx_outputs
    assert_static_onnx(proto, (1, 3, 384, 640), yolop.OUTPUT_NAMES)
    assert not {"Loop", "If", "Scan"} & {node.op_type for node in proto.graph.node}


def test_onnxruntime_matches_golden(onnx_outputs, prepared):
    _, (det, drivable, lane) = onnx_outputs
    assert_raw_outputs_match(det, drivable, lane)
    assert_detections_match(yolop.detect(det, prepared[1], CONF, IOU))
    assert_masks_match(*yolop.masks(drivable, lane, prepared[1]))


@pytest.mark.parametrize("input_hw, gflops", [((384, 640), 18.49), ((640, 640), 30.82)])
def test_flops_are_the_originals(input_hw, gflops):
    """The README's cost (FlopCounterMode: 2 x MACs of the convolutions, whole forward)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        yolop.build_module()(torch.zeros(1, 3, *input_hw))
    assert counter.get_total_flops() / 1e9 == pytest.approx(gflops, abs=0.005)


def test_wrong_checkpoint_is_rejected_clearly(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    del state["model.24.anchor_grid"]
    state["model.33.conv.weight"] = torch.zeros(3, 8, 3, 3)
    state["model.43.conv.weight"] = torch.zeros(2, 8, 3, 3)
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": state}, wrong)
    with pytest.raises(ValueError) as error:
        yolop.load_checkpoint(yolop.build_module(), wrong)
    message = str(error.value)
    assert "1 missing keys: model.24.anchor_grid" in message
    assert "1 unexpected keys: model.43.conv.weight" in message
    assert "1 mis-shaped keys: model.33.conv.weight (3, 8, 3, 3) (expected (2, 8, 3, 3))" in message


def test_a_batch_gives_each_frames_outputs(model, prepared, torch_outputs):
    x = np.concatenate([prepared[0], prepared[0][..., ::-1]])  # the frame and its mirror
    with torch.inference_mode():
        batch = [t.numpy() for t in model(torch.from_numpy(np.ascontiguousarray(x)))]
    for ours, alone in zip(batch, torch_outputs):
        assert ours.shape == (2, *alone.shape[1:])
        np.testing.assert_allclose(ours[:1], alone, rtol=1e-5, atol=1e-4)
    assert not np.allclose(batch[0][0], batch[0][1])


# --- the package's pipeline (model:=yolop) against the golden case ----------------------------
def yolop_config(checkpoint, backend: str, **extra):
    from hybridnets_ros.pipeline.config import NodeConfig
    return NodeConfig.from_mapping({"model": "yolop", "weights": str(checkpoint),
                                    "backend": backend, "device": "cpu", "input_size": SIZE,
                                    "conf_threshold": CONF, "iou_threshold": IOU,
                                    "camera_resolution": [1280, 720], **extra})


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.slow),  # trace + freeze
                                     "onnxruntime", "openvino"])
def test_pipeline_backends_match_golden(checkpoint, prepared, backend):
    """Every exact CPU backend through the node's pipeline: raw outputs within the README's
    tolerances, the same detections, masks equal up to a few pixels in ten thousand."""
    from hybridnets_ros.pipeline.factory import build_pipeline

    if backend == "openvino":
        pytest.importorskip("openvino")
    pipeline = build_pipeline(yolop_config(checkpoint, backend))
    raw = pipeline.backend.infer(prepared[0])
    assert raw._fields == yolop.OUTPUT_NAMES
    assert_raw_outputs_match(*(np.asarray(r) for r in raw))
    result = pipeline(golden()["input_bgr"])
    assert_detections_match(result.detections)
    assert result.drivable_mask.dtype == result.lane_mask.dtype == bool
    assert_masks_match(result.drivable_mask.view(np.uint8), result.lane_mask.view(np.uint8))
    # the class map: lane lines over the road over the background
    np.testing.assert_array_equal(result.seg_mask, np.where(result.lane_mask, 2,
                                                            result.drivable_mask.view(np.uint8)))


@pytest.mark.slow  # two frames through the network, batched and alone
def test_two_cameras_share_one_network_call(checkpoint):
    """With two cameras both frames go through one batch-2 call; each frame's Result is the
    one it gets alone."""
    from hybridnets_ros.pipeline.factory import build_pipeline

    pipeline = build_pipeline(yolop_config(checkpoint, "onnxruntime", cameras=["left", "right"]))
    assert pipeline.batch_size == 2
    image = golden()["input_bgr"]
    mirrored = np.ascontiguousarray(image[:, ::-1])
    both = pipeline.run_batch([image, mirrored])
    assert [r.batch_size for r in both] == [2, 2]
    assert_detections_match(both[0].detections)
    alone = pipeline(mirrored)
    np.testing.assert_array_equal(both[1].detections.boxes, alone.detections.boxes)
    assert (both[1].drivable_mask != alone.drivable_mask).mean() <= MAX_MASK_DIFFERENCE


def test_frame_processor_publishes_what_hybridnets_publishes(checkpoint):
    """model:=yolop fills every per-frame output HybridNets fills, from the golden frame."""
    from std_msgs.msg import Header

    from hybridnets_ros.core.camera import CameraModel
    from hybridnets_ros.core.registry import adapter
    from hybridnets_ros.pipeline.factory import build_pipeline
    from hybridnets_ros.ros import messages
    from hybridnets_ros.ros.camera_info import camera_info_from_model
    from hybridnets_ros.ros.frame import FrameProcessor
    from hybridnets_ros.ros.outputs import supported

    assert ({o.name for o in supported(adapter("yolop"))}
            == {o.name for o in supported(adapter("hybridnets"))})
    config = yolop_config(checkpoint, "onnxruntime", publish_points=True)
    processor = FrameProcessor(build_pipeline(config), config)
    camera = CameraModel.from_pose(CameraModel.intrinsics(900.0, 900.0, 640.0, 360.0), 1280, 720,
                                   (0.0, 0.0, 1.5, 0.0, 0.0, 0.0))
    processor.set_camera_info(camera_info_from_model(camera, "camera_optical_frame"))
    outcome = processor.process(messages.image(Header(frame_id="camera_optical_frame"),
                                               golden()["input_bgr"], "bgr8"))
    per_frame = {o.name for o in supported(adapter("hybridnets")) if o.per_frame}
    assert set(outcome.messages) == per_frame
    assert len(outcome.messages["detections"].detections) == 51
    lane = np.frombuffer(outcome.messages["lane_mask"].data, np.uint8).reshape(720, 1280)
    assert (lane > 0).mean() == pytest.approx(golden()["ll_seg_mask"].mean(), abs=1e-3)


@pytest.mark.slow  # a whole CLI run
def test_infer_save_npz_writes_the_golden_masks(checkpoint, tmp_path):
    from hybridnets_ros.cli import main

    image = _need(DEMO_IMAGES / "1.jpg")
    assert main(["infer", str(image), "--model", "yolop", "--weights", str(checkpoint),
                 "--conf", str(CONF), "--iou", str(IOU), "--backend", "onnxruntime",
                 "--device", "cpu", "--output", str(tmp_path), "--save-npz"]) == 0
    with np.load(tmp_path / "1.npz") as saved:
        np.testing.assert_array_equal(saved["det_boxes_xyxy"], golden()["det_boxes_xyxy"])
        assert saved["drivable_mask"].dtype == saved["lane_mask"].dtype == np.uint8
        assert_masks_match(saved["drivable_mask"], saved["lane_mask"])
