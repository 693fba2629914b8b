"""The GPU data path's functions are device-agnostic torch code: checked here on CPU tensors
against the numpy/OpenCV path, and on CUDA where it exists."""
import cv2
import numpy as np
import pytest
import torch

from conftest import match_detections, requires_cuda
from hybridnets_ros.core.models.hybridnets.torch_preprocess import TorchPreprocessor, area_weights
from hybridnets_ros.pipeline.pipeline import Pipeline
from hybridnets_ros.core.postprocess import resize_nearest
from hybridnets_ros.core.models.hybridnets.postprocess import detect, segmentation_labels
from hybridnets_ros.core.models.hybridnets.preprocess import Preprocessor, letterbox as letterbox_of

GREY_LEVEL = 1 / 255 / min(0.229, 0.224, 0.225)  # one input grey level, normalised


def textured(hw, seed=0):
    """A random image with some spatial correlation (more like a photo than pure noise)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (*hw, 3), dtype=np.uint8), (3, 3), 0)


def test_golden_frame_is_bit_exact(golden_case):
    tensor, letterbox = TorchPreprocessor(640)(golden_case["input_bgr"])
    assert letterbox.input_hw == (384, 640)
    np.testing.assert_array_equal(tensor.numpy(), golden_case["input_tensor"])


@pytest.mark.parametrize("hw", [(1080, 1920), (1440, 2560), (1200, 1600), (360, 640), (480, 640)])
def test_integer_downscale_and_no_resize_are_exact(hw):
    image = textured(hw)
    ours, lb = TorchPreprocessor(640)(image)
    np.testing.assert_array_equal(ours.numpy(), Preprocessor(640)(image)[0])


@pytest.mark.parametrize("hw, max_fraction", [
    ((722, 1282), 1e-4), ((768, 1366), 1e-4), ((562, 1000), 1e-4), ((2000, 30), 1e-3),
    ((37, 501), 0.05),  # upscale: OpenCV computes it in fixed point, we in float32
])
def test_other_ratios_differ_by_at_most_one_grey_level(hw, max_fraction):
    image = textured(hw, seed=1)
    ours, _ = TorchPreprocessor(640)(image)
    diff = np.abs(ours.numpy() - Preprocessor(640)(image)[0])
    assert diff.max() <= GREY_LEVEL * 1.01
    assert (diff > 1e-6).mean() <= max_fraction


def test_area_weights_are_a_partition():
    for src, dst in ((1366, 640), (640, 640), (37, 47), (30, 9)):
        w = area_weights(src, dst)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)
        assert (w >= 0).all()


def test_rgb_input_and_device_tensors():
    image = textured((720, 1280), seed=2)
    pre = TorchPreprocessor(640)
    bgr = pre(image)[0].clone()
    assert torch.equal(pre(torch.from_numpy(image))[0], bgr)  # a frame already on the device
    with pytest.raises(ValueError, match="uint8 image HxWx3"):
        pre(image.astype(np.float32))


@pytest.mark.parametrize("src, dst", [((360, 640), (720, 1280)), ((359, 640), (562, 1000)),
                                      ((360, 640), (1080, 1920)), ((47, 640), (37, 501)),
                                      ((480, 640), (1200, 1600)), ((384, 640), (384, 640))])
def test_nearest_resize_matches_opencv(src, dst):
    labels = np.random.default_rng(3).integers(0, 3, src, dtype=np.uint8)
    expected = cv2.resize(labels, dst[::-1], interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(resize_nearest(torch.from_numpy(labels), dst).numpy(), expected)


def test_class_map_on_device_equals_host(golden_case, golden_pipeline):
    letterbox = golden_pipeline.preprocessor.letterbox((720, 1280))
    seg = torch.from_numpy(golden_case["segmentation"][0])
    on_device = segmentation_labels(seg, letterbox, on_device=True)
    np.testing.assert_array_equal(on_device, segmentation_labels(seg, letterbox, on_device=False))
    np.testing.assert_array_equal(on_device, golden_case["seg_mask"])


def test_detections_selected_on_device_equal_host(golden_case):
    """The candidate selection a GPU runs (torch, where the outputs are) and the host's
    (numpy) give the same detections; only the selection differs, NMS is the host's."""
    from hybridnets_ros.core.models.hybridnets.anchors import generate_anchors
    from hybridnets_ros.core.models.hybridnets.spec import BDD100K
    letterbox = letterbox_of((720, 1280), 640, BDD100K.max_stride)
    anchors = generate_anchors(letterbox.input_hw, BDD100K).copy()  # the cached one is read-only
    regression, classification = (golden_case[k][0] for k in ("regression", "classification"))
    for conf, cap in ((0.25, 100), (0.05, 3)):  # the second cuts the candidates to 90
        host = detect(regression, classification, anchors, letterbox, conf, 0.3, cap)
        device = detect(torch.from_numpy(regression), torch.from_numpy(classification),
                        torch.from_numpy(anchors), letterbox, conf, 0.3, cap, on_device=True)
        assert len(host) > 0
        np.testing.assert_array_equal(device.boxes, host.boxes)
        np.testing.assert_array_equal(device.scores, host.scores)
        np.testing.assert_array_equal(device.classes, host.classes)


@pytest.mark.slow  # the whole network twice
def test_whole_on_device_on_cpu_equals_host_path(golden_pipeline, golden_case):
    on_device = Pipeline(golden_pipeline.backend, processing_on_device=True)
    assert isinstance(on_device.preprocessor, TorchPreprocessor)
    result = on_device(golden_case["input_bgr"])
    reference = golden_pipeline(golden_case["input_bgr"])
    d, r = result.detections, reference.detections
    match_detections(d.boxes, d.scores, d.classes, r.boxes, r.scores, r.classes,
                     iou_min=0.9999, score_tol=1e-6)
    np.testing.assert_array_equal(result.seg_mask, reference.seg_mask)


@requires_cuda
def test_on_device_on_cuda(golden_model, golden_case):
    from hybridnets_ros.backends import create_backend
    from hybridnets_ros.core.registry import adapter
    pipeline = Pipeline(create_backend("torch", golden_model, adapter("hybridnets"), device="cuda"))
    assert pipeline.processing_on_device
    tensor, _ = pipeline.preprocessor(golden_case["input_bgr"])
    assert tensor.is_cuda
    np.testing.assert_array_equal(tensor.cpu().numpy(), golden_case["input_tensor"])
    result = pipeline(golden_case["input_bgr"])
    d = result.detections
    match_detections(d.boxes, d.scores, d.classes, golden_case["det_boxes_xyxy"],
                     golden_case["det_scores"], golden_case["det_classes"])
    assert (result.seg_mask == golden_case["seg_mask"]).mean() >= 0.999
