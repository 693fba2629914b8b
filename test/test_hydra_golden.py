"""Hydra against the original network's outputs (shared/golden/hydra): checkpoint layout,
preprocessing, raw outputs, post-processing, checkpoint errors and the ONNX export."""
from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest
import torch

from conftest import GOLDEN, _need, assert_static_onnx, export_and_run_onnx, load_npz
from hybridnets_ros.core.models import hydra

HYDRA = GOLDEN / "hydra"
CASES = ("case_kitti_000099", "case_1")
ONNX_CASE = "case_kitti_000099"
# The README's suggested acceptance.
LOGITS_ATOL = 5e-3
DEPTH_ATOL_M = 1e-2
MIN_CLASS_AGREEMENT = 0.9995
MIN_DEPTH_WITHIN_1CM = 0.9999


@cache
def load_case(name: str) -> tuple[dict[str, np.ndarray], dict]:
    return load_npz(HYDRA / f"{name}.npz"), json.loads((HYDRA / f"{name}.json").read_text())


def bgr_of(case: dict[str, np.ndarray]) -> np.ndarray:
    return np.ascontiguousarray(case["input_rgb"][..., ::-1])


@pytest.fixture(scope="module")
def checkpoint():
    return _need(HYDRA / "hydra_kitti_random_seed0.pth")


@pytest.fixture(scope="module")
def model(checkpoint):
    return hydra.load_checkpoint(hydra.build_module(), checkpoint)


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return load_case(request.param)


@pytest.fixture(scope="module")
def torch_outputs(model, case):
    """(segm_logits, depth) of one forward pass per case."""
    arrays, _ = case
    with torch.inference_mode():
        segm, depth = model(torch.from_numpy(hydra.preprocess(bgr_of(arrays))))
    return segm.numpy(), depth.numpy()


@pytest.fixture(scope="module")
def onnx_outputs(model, tmp_path_factory):
    """The static-shape ONNX export for the KITTI frame, run once with ONNX Runtime."""
    arrays, _ = load_case(ONNX_CASE)
    x = hydra.preprocess(bgr_of(arrays))
    path = tmp_path_factory.mktemp("hydra-onnx") / "hydra.onnx"
    return export_and_run_onnx(model, x, path, hydra.OUTPUT_NAMES)


def assert_raw_outputs_match(segm, depth, arrays):
    assert segm.shape == arrays["segm_logits"].shape and depth.shape == arrays["depth_raw"].shape
    np.testing.assert_allclose(segm, arrays["segm_logits"], rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(depth, arrays["depth_raw"], rtol=0, atol=DEPTH_ATOL_M)


def assert_postprocessed_outputs_match(segm, depth, arrays):
    seg_mask, depth_m = hydra.postprocess(segm, depth, tuple(arrays["input_hw"]))
    assert seg_mask.dtype == np.uint8 and seg_mask.shape == arrays["class_map"].shape
    assert depth_m.dtype == np.float32 and depth_m.shape == arrays["depth_m"].shape
    assert (seg_mask == arrays["class_map"]).mean() >= MIN_CLASS_AGREEMENT
    assert (np.abs(depth_m - arrays["depth_m"]) <= 0.01).mean() >= MIN_DEPTH_WITHIN_1CM
    np.testing.assert_allclose(depth_m, arrays["depth_m"], rtol=0, atol=DEPTH_ATOL_M)


def test_state_dict_layout_equals_released_checkpoint():
    layout = json.loads(_need(HYDRA / "checkpoint_keys.json").read_text())
    expected = [(key, shape, dtype) for key, shape, dtype in
                layout["entries_key_shape_dtype_in_order"]]
    ours = [(key, list(value.shape), str(value.dtype).removeprefix("torch."))
            for key, value in hydra.build_module().state_dict().items()]
    assert ours == expected and len(ours) == layout["num_entries"] == 343


def test_class_names_and_colours(case):
    _, meta = case
    assert list(hydra.CLASS_NAMES) == meta["class_names"]
    assert len(set(hydra.CLASS_COLORS_RGB)) == len(hydra.CLASS_COLORS_RGB) == 6
    assert hydra.CLASS_COLORS_RGB[hydra.CLASS_NAMES.index("road")] == (128, 64, 128)


def test_preprocess_is_the_notebooks_float64_normalisation(case):
    arrays, meta = case
    x = hydra.preprocess(bgr_of(arrays))
    mean, std = np.array(hydra.MEAN_RGB), np.array(hydra.STD_RGB)
    reference = ((arrays["input_rgb"] * (1. / 255) - mean) / std).transpose(2, 0, 1)[None]
    np.testing.assert_array_equal(x, reference.astype(np.float32))
    assert x.dtype == np.float32 and list(x.shape) == meta["preprocess"]["input_tensor_shape"]
    # The reference's own record of its input tensor (a float32-arithmetic input would
    # differ by up to 4.8e-7 per value).
    assert x.sum(dtype=np.float64) == pytest.approx(
        meta["preprocess"]["input_tensor_sum_float64"], rel=1e-12)


def test_preprocess_rejects_non_uint8_bgr():
    with pytest.raises(ValueError, match="uint8"):
        hydra.preprocess(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        hydra.preprocess(np.zeros((8, 8), np.uint8))


def test_output_size_is_two_ceil_halvings(model):
    # Sizes from the README, plus an odd size run through the network.
    assert hydra.network_output_hw((720, 1280)) == (180, 320)
    assert hydra.network_output_hw((370, 1226)) == (93, 307)
    assert hydra.network_output_hw((375, 1242)) == (94, 311)
    with torch.inference_mode():
        segm, depth = model(torch.zeros(1, 3, 37, 53))
    assert segm.shape == (1, 6, *hydra.network_output_hw((37, 53))) == (1, 6, 10, 14)
    assert depth.shape == (1, 1, 10, 14)


def test_raw_outputs_match_golden(torch_outputs, case):
    assert_raw_outputs_match(*torch_outputs, case[0])


def test_postprocessed_outputs_match_golden(torch_outputs, case):
    assert_postprocessed_outputs_match(*torch_outputs, case[0])


def test_postprocess_of_reference_outputs_matches_to_rounding(case):
    """The same raw outputs give the reference's depth and class map up to float rounding:
    OpenCV's cubic resize picks its SIMD kernel per CPU (AVX2 and AVX-512 builds round
    differently in the last bits), so bit-equality holds on one CPU kind only."""
    arrays, _ = case
    seg_mask, depth_m = hydra.postprocess(torch.from_numpy(arrays["segm_logits"]),
                                          arrays["depth_raw"][0], tuple(arrays["input_hw"]))
    np.testing.assert_allclose(depth_m, arrays["depth_m"], rtol=1e-5, atol=1e-5)
    assert np.mean(seg_mask != arrays["class_map"]) <= 1e-4  # a few near-tie pixels at most


def test_postprocess_rejects_mismatched_outputs():
    with pytest.raises(ValueError, match="one image"):
        hydra.postprocess(np.zeros((2, 6, 4, 4)), np.zeros((2, 1, 4, 4)), (16, 16))
    with pytest.raises(ValueError, match="one image"):
        hydra.postprocess(np.zeros((1, 6, 4, 4)), np.zeros((1, 1, 4, 5)), (16, 16))


def test_checkpoint_variants_load(checkpoint, model, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{key}": value for key, value in state.items()}, bare)
    loaded = hydra.load_checkpoint(hydra.build_module(), bare).state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in model.state_dict().items())


def test_wrong_checkpoint_is_rejected_clearly(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    del state["conv3.weight"]
    state["segm.bias"] = torch.zeros(7)
    state["normal.weight"] = torch.zeros(3, 256, 3, 3)
    wrong = tmp_path / "wrong.pth"
    torch.save({"state_dict": state}, wrong)
    with pytest.raises(ValueError) as error:
        hydra.load_checkpoint(hydra.build_module(), wrong)
    message = str(error.value)
    assert "1 missing keys: conv3.weight" in message
    assert "1 unexpected keys: normal.weight" in message
    assert "1 mis-shaped keys: segm.bias (7,) (expected (6,))" in message


def test_non_finite_checkpoint_is_rejected(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    state["layer1.1.running_var"][3] = float("nan")
    state["depth.bias"][0] = float("inf")
    bad = tmp_path / "nan.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(ValueError, match=r"2 non-finite .*layer1\.1\.running_var, depth\.bias"):
        hydra.load_checkpoint(hydra.build_module(), bad)


def test_unreadable_checkpoint_is_rejected(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read .* as a PyTorch checkpoint"):
        hydra.load_checkpoint(hydra.build_module(), junk)


def test_onnx_export_is_static_opset_17(onnx_outputs):
    proto, _ = onnx_outputs
    height, width = load_case(ONNX_CASE)[0]["input_hw"]
    assert_static_onnx(proto, (1, 3, height, width), hydra.OUTPUT_NAMES)


def test_onnxruntime_matches_golden(onnx_outputs):
    _, (segm, depth) = onnx_outputs
    arrays, _ = load_case(ONNX_CASE)
    assert_raw_outputs_match(segm, depth, arrays)
    assert_postprocessed_outputs_match(segm, depth, arrays)


# --- the package's backends and pipeline (model:=hydra) against the golden case -------------
@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.slow),  # trace + freeze
                                     "onnxruntime", "openvino"])
def test_pipeline_backends_match_golden(checkpoint, backend):
    """Every exact CPU backend through the node's pipeline: raw outputs within the README's
    tolerances, class map >= 99.95 % identical, depth within 1 cm at >= 99.99 % of pixels."""
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline

    if backend == "openvino":
        pytest.importorskip("openvino")
    arrays, _ = load_case(ONNX_CASE)
    bgr = bgr_of(arrays)
    config = NodeConfig.from_mapping({"model": "hydra", "weights": str(checkpoint),
                                      "backend": backend, "device": "cpu",
                                      "camera_resolution": [bgr.shape[1], bgr.shape[0]]})
    pipeline = build_pipeline(config)
    segm, depth = pipeline.backend.infer(hydra.preprocess(bgr))
    np.testing.assert_allclose(np.asarray(segm), arrays["segm_logits"], rtol=0, atol=LOGITS_ATOL)
    np.testing.assert_allclose(np.asarray(depth), arrays["depth_raw"], rtol=0, atol=DEPTH_ATOL_M)
    result = pipeline(bgr)
    assert result.seg_mask.dtype == np.uint8 and result.depth_m.dtype == np.float32
    assert (result.seg_mask == arrays["class_map"]).mean() >= MIN_CLASS_AGREEMENT
    assert (np.abs(result.depth_m - arrays["depth_m"]) <= 0.01).mean() >= MIN_DEPTH_WITHIN_1CM
