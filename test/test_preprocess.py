"""Letterbox geometry and its inverse for assorted image sizes."""
import numpy as np
import pytest
import torch

from hybridnets_ros.core.models.hybridnets.torch_preprocess import TorchPreprocessor
from hybridnets_ros.core.models.hybridnets.postprocess import scale_boxes, segmentation_labels
from hybridnets_ros.core.preprocess import PAD_VALUE
from hybridnets_ros.core.models.hybridnets.preprocess import Preprocessor, letterbox

SIZES = [(720, 1280), (1080, 1920), (480, 640), (1, 1), (1280, 720), (2000, 1), (37, 501),
         (384, 640), (100, 100)]


@pytest.mark.parametrize("hw", SIZES)
@pytest.mark.parametrize("target", [640, 384, 512])
def test_network_input_is_valid_for_any_size(hw, target):
    lb = letterbox(hw, target, 128)
    H, W = lb.input_hw
    assert H % 128 == 0 and W % 128 == 0
    h, w = lb.resized_hw
    assert max(h, w) <= target and min(h, w) >= 1
    assert 0 <= lb.top and lb.top + h <= H and 0 <= lb.left and lb.left + w <= W
    tensor, _ = Preprocessor(target)(np.full((*hw, 3), 200, np.uint8))
    assert tensor.shape == (1, 3, H, W)


def test_reference_geometry_where_the_reference_works():
    lb = letterbox((720, 1280), 640, 128)
    assert (lb.resized_hw, lb.input_hw, lb.pad_w, lb.pad_h, lb.top) == ((360, 640), (384, 640), 0, 12, 12)
    lb = letterbox((1080, 1920), 640, 128)  # same aspect: same letterbox
    assert (lb.resized_hw, lb.input_hw, lb.pad_h) == ((360, 640), (384, 640), 12)
    lb = letterbox((1280, 720), 640, 128)  # portrait
    assert (lb.resized_hw, lb.input_hw, lb.pad_w, lb.left) == ((640, 360), (640, 384), 12, 12)


def test_padding_extends_to_128_where_the_reference_crashes():
    lb = letterbox((480, 640), 640, 128)  # reference: 480 rows, not a multiple of 128
    assert lb.input_hw == (512, 640) and lb.pad_h == 16
    lb = letterbox((720, 1280), 384, 128)  # reference: 224 rows
    assert lb.input_hw == (256, 384) and lb.resized_hw == (216, 384) and lb.pad_h == 20


@pytest.mark.parametrize("hw", SIZES)
def test_borders_and_content(hw):
    pre = Preprocessor(640)
    bgr = np.zeros((*hw, 3), np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    tensor, lb = pre(bgr)
    h, w = lb.resized_hw
    inside = tensor[0, :, lb.top:lb.top + h, lb.left:lb.left + w]
    np.testing.assert_allclose(inside[0], (1.0 - 0.485) / 0.229, rtol=1e-6)  # R plane first
    np.testing.assert_allclose(inside[2], (0.0 - 0.406) / 0.225, rtol=1e-6)
    border = np.ones(tensor.shape[2:], bool)
    border[lb.top:lb.top + h, lb.left:lb.left + w] = False
    np.testing.assert_allclose(tensor[0, 1][border], (PAD_VALUE / 255 - 0.456) / 0.224, rtol=1e-6)


@pytest.mark.parametrize("hw", SIZES)
def test_boxes_and_masks_map_back_to_the_source(hw):
    lb = letterbox(hw, 640, 128)
    h, w = lb.resized_hw
    # The resized content's extent maps back to the source image: like the reference, both
    # axes are divided by h/h0 and then clipped to the image.
    content = np.array([[lb.pad_w, lb.pad_h, lb.pad_w + w, lb.pad_h + h]], np.float32)
    back = scale_boxes(content.copy(), lb)
    expected = [0, 0, min(w / lb.gain, hw[1]), hw[0]]
    np.testing.assert_allclose(back[0], expected, rtol=1e-5, atol=1e-3)
    # A class map that marks the resized content maps back to a mask of the source size.
    H, W = lb.input_hw
    logits = torch.zeros(3, H, W)
    logits[1, lb.top:lb.top + h, lb.left:lb.left + w] = 1.0
    mask = segmentation_labels(logits, lb)
    assert mask.shape == hw and mask.dtype == np.uint8
    assert mask.mean() >= 0.5  # mostly road; at most a pad-rounding row differs


def test_rejects_bad_images():
    pre = Preprocessor(640)
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ValueError, match="BGR uint8"):
            pre(bad)
    with pytest.raises(ValueError, match="no pixels"):
        pre(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ValueError, match="at least 128"):
        Preprocessor(64)


@pytest.mark.parametrize("make", [Preprocessor, TorchPreprocessor])
def test_buffer_is_reused_and_rebuilt_on_size_change(make):
    pre = make(640)
    a, _ = pre(np.zeros((720, 1280, 3), np.uint8))
    b, _ = pre(np.full((720, 1280, 3), 9, np.uint8))
    assert a is b
    c, lb = pre(np.zeros((480, 640, 3), np.uint8))
    assert c.shape == (1, 3, *lb.input_hw) and lb.input_hw == (512, 640)
