"""HyCTAS against the original implementation's outputs (shared/golden/hyctas, README there)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from conftest import DEMO_IMAGES, GOLDEN, _need, export_and_run_onnx, load_npz
from hybridnets_ros.core.models import hyctas
from hybridnets_ros.core.models.hyctas import network

HYCTAS = GOLDEN / "hyctas"
LOGITS_ATOL = 1e-2  # the README's suggested acceptance for S and M
MIN_AGREEMENT = 0.9995
CROP_ROWS, CROP_COLS = slice(176, 544), slice(320, 960)  # case_1_crop_368x640_native
KEY_LISTS = {"S": "checkpoint_keys.json", "M": "checkpoint_keys_m.json",
             "L": "checkpoint_keys_l.json"}


def _case(name: str) -> dict[str, np.ndarray]:
    return load_npz(HYCTAS / f"{name}.npz")


def _check_against_case(logits: np.ndarray, crop: hyctas.CropInfo, case: dict) -> None:
    """Logits within the README's tolerance, class maps >= 99.95 % identical."""
    assert logits.shape == case["logits"].shape
    assert np.abs(logits - case["logits"]).max() <= LOGITS_ATOL
    class_map = hyctas.postprocess(logits, crop, case["class_map"].shape)
    assert class_map.shape == case["class_map"].shape and class_map.dtype == np.uint8
    assert (class_map == case["class_map"]).mean() >= MIN_AGREEMENT


def _run(model: torch.nn.Module, tensor: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(tensor)).numpy()


@pytest.fixture(scope="module")
def image_1() -> np.ndarray:
    return cv2.imread(str(_need(DEMO_IMAGES / "1.jpg")))


@pytest.fixture(scope="module")
def s_model() -> torch.nn.Module:
    return hyctas.load_checkpoint(hyctas.build_module("S"),
                                  _need(HYCTAS / "hyctas_s_cityscapes_random_seed0.pth"))


@pytest.fixture(scope="module")
def s_reference(s_model, image_1):
    """case_1 through the reference path with torch, run once."""
    tensor, crop = hyctas.preprocess(image_1, "reference")
    return tensor, crop, _run(s_model, tensor)


def _tiny_architectures() -> list[dict]:
    """Every primitive at stride 1 and 2: three branches ending at 1/8, 1/16 and 1/32 (the first
    two share their first cell), and a single branch."""
    three_branches = {"ops": [[0, 4, 1], [0, 0, 2], [1, 4, 3, 0]],
                      "paths": [[0, 0, 0], [0, 0, 1], [0, 1, 2, 2]],
                      "downs": [[0, 0, 0], [0, 1, 0], [1, 1, 0, 0]],
                      "widths": [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5, 1.0]], "lasts": [0, 1, 2]}
    one_branch = {"ops": [[2, 3, 4, 3]], "paths": [[0, 1, 2, 2]], "downs": [[1, 1, 0, 0]],
                  "widths": [[0.5, 1 / 3, 0.5]], "lasts": [2]}
    return [three_branches, one_branch]


# --- architecture and checkpoints ---------------------------------------------------------

def test_shipped_architectures_are_the_reference_files():
    for name in hyctas.ARCHITECTURES.values():
        shipped = (hyctas.ARCH_DIR / name).read_bytes()
        assert len(shipped) < 2048
        assert shipped == _need(HYCTAS / name).read_bytes()


@pytest.mark.parametrize("arch", ["S", "M", "L"])
def test_state_dict_layout_matches_reference(arch):
    reference = json.loads(_need(HYCTAS / KEY_LISTS[arch]).read_text())
    entries = reference["entries_key_shape_dtype_in_order"]
    state = hyctas.build_module(arch).state_dict()
    assert [(k, list(v.shape)) for k, v in state.items()] == [(e[0], e[1]) for e in entries]
    # HRTNet_L: branches share cells; a shared cell is one module under several names.
    shared = [(e[0], e[3]["same_tensor_as"]) for e in entries if len(e) > 3]
    assert len(shared) == {"S": 0, "M": 0, "L": 72}[arch]
    assert all(state[a].data_ptr() == state[b].data_ptr() for a, b in shared)


def test_checkpoint_loads_exactly_in_float32(s_model):
    stored = torch.load(HYCTAS / "hyctas_s_cityscapes_random_seed0.pth",
                        weights_only=True)["state_dict"]
    loaded = s_model.state_dict()
    assert loaded.keys() == stored.keys()
    for key, value in stored.items():
        assert loaded[key].dtype == (torch.float32 if value.is_floating_point() else value.dtype)
        assert torch.equal(loaded[key], value.to(loaded[key].dtype)), key


def test_wrong_checkpoint_is_rejected_with_the_differences():
    model = hyctas.build_module("S")
    with pytest.raises(ValueError, match="wrong architecture") as error:
        hyctas.load_checkpoint(model, _need(HYCTAS / "hyctas_m_cityscapes_random_seed0.pth"))
    message = str(error.value)
    for what in ("missing", "unexpected", "mis-shaped"):
        assert what in message
    assert ("backbone.cells.1-0._op._op.0.conv.weight (128, 85, 3, 3) (expected (171, 85, 3, 3))"
            in message)


@pytest.mark.slow  # several checkpoint loads
def test_checkpoint_forms_and_non_finite_weights(tmp_path):
    arch_file = tmp_path / "tiny.json"
    arch_file.write_text(json.dumps(_tiny_architectures()[0]))
    torch.manual_seed(0)
    source = hyctas.build_module(arch_file)
    bare = {f"module.{k}": v.half() if v.is_floating_point() else v
            for k, v in source.state_dict().items()}
    torch.save(bare, tmp_path / "bare.pth")
    loaded = hyctas.load_checkpoint(hyctas.build_module(arch_file), tmp_path / "bare.pth")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, bare[f"module.{key}"].to(value.dtype)), key

    bare["module.sem_head.predictor.bias"][3] = float("nan")
    torch.save({"state_dict": bare}, tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="NaN or Inf: sem_head.predictor.bias"):
        hyctas.load_checkpoint(hyctas.build_module(arch_file), tmp_path / "nan.pth")
    with pytest.raises(ValueError, match="unknown architecture"):
        hyctas.build_module("XL")


@pytest.mark.parametrize("arch", _tiny_architectures(), ids=["three-branches", "one-branch"])
def test_every_primitive_builds_and_runs(arch, tmp_path):
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(arch))
    model = hyctas.build_module(arch_file)
    for module in model.modules():  # gamma starts at 0, which would bypass the attention
        if isinstance(module, network.PositionAttention):
            torch.nn.init.ones_(module.gamma)
    logits = _run(model, np.random.default_rng(0).standard_normal((1, 3, 64, 128), np.float32))
    assert logits.shape == (1, 19, 16, 32) and np.isfinite(logits).all()
    if len(arch["lasts"]) == 3:
        cells = model.backbone.cells
        assert cells["0-0"] is cells["0-1"] and cells["0-2"] is not cells["0-0"]
        # MixedOp does not wrap `skip` in a Sequential.
        assert "backbone.cells.1-1._op._op.conv2.weight" in model.state_dict()


def test_architecture_file_is_checked(tmp_path):
    bad = {**_tiny_architectures()[1], "downs": [[0, 1, 0, 0]]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="branch 0"):
        hyctas.build_module(tmp_path / "bad.json")


def test_blocked_attention_is_the_unscaled_softmax_attention(monkeypatch):
    torch.manual_seed(0)
    attention = network.PositionAttention(32).eval()
    torch.nn.init.constant_(attention.gamma, 0.7)
    x = torch.randn(1, 32, 12, 20)
    with torch.inference_mode():
        whole = attention(x)
        monkeypatch.setattr(network, "ATTENTION_BLOCK_ELEMENTS", 240 * 7)  # 7 query rows a block
        blocked = attention(x)
        attention.double()
        q, k, v = (conv(x.double()).flatten(2)
                   for conv in (attention.query_conv, attention.key_conv, attention.value_conv))
        weights = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # no 1/sqrt(d)
        expected = 0.7 * (v @ weights.transpose(1, 2)).view(1, 32, 12, 20) + x.double()
    torch.testing.assert_close(blocked, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(whole.double(), expected, rtol=0, atol=1e-5)


# --- pre- and post-processing -------------------------------------------------------------

def test_reference_preprocessing_matches_golden_input(image_1):
    tensor, crop = hyctas.preprocess(image_1, "reference")
    meta = json.loads(_need(HYCTAS / "case_1.json").read_text())
    assert list(tensor.shape) == meta["input_tensor_shape"] and tensor.dtype == np.float32
    assert crop == hyctas.CropInfo(input_hw=(1024, 2048), valid_hw=(720, 1280))
    assert tensor.sum(dtype=np.float64) == meta["input_tensor_sum_float64"]
    np.testing.assert_allclose(tensor.mean(axis=(0, 2, 3), dtype=np.float64),
                               meta["input_tensor_channel_means"], rtol=0, atol=1e-7)


def test_native_and_oversized_preprocessing():
    bgr = np.random.default_rng(1).integers(0, 256, (721, 1283, 3), np.uint8)
    native, crop = hyctas.preprocess(bgr, "native")
    reference, _ = hyctas.preprocess(bgr, "reference")
    assert native.shape == (1, 3, 736, 1296) and crop == hyctas.CropInfo((736, 1296), (721, 1283))
    np.testing.assert_array_equal(native[..., :721, :1283], reference[..., :721, :1283])
    pad = native[0, :, 730, 1290]
    np.testing.assert_array_equal(native[0, :, 721:, :],
                                  np.broadcast_to(pad[:, None, None], (3, 15, 1296)))
    expected_pad = (np.array(hyctas.PAD_RGB) / 255 - hyctas.MEAN_RGB) / hyctas.STD_RGB
    np.testing.assert_allclose(pad, expected_pad, atol=1e-6)

    big = np.zeros((1200, 1920, 3), np.uint8)
    tensor, crop = hyctas.preprocess(big, "reference")
    assert tensor.shape == (1, 3, 1024, 2048) and crop.valid_hw == (1024, 1638)
    logits = np.zeros((1, 19, 256, 512), np.float32)
    logits[0, 5] = 1.0
    class_map = hyctas.postprocess(logits, crop, big.shape[:2])
    assert class_map.shape == (1200, 1920) and (class_map == 5).all()
    assert hyctas.preprocess(bgr, "native", pad_multiple=64)[0].shape == (1, 3, 768, 1344)
    with pytest.raises(ValueError, match="mode"):
        hyctas.preprocess(bgr, "letterbox")
    with pytest.raises(ValueError, match="multiple of 16"):
        hyctas.preprocess(bgr, "native", pad_multiple=24)


def test_postprocessing_of_golden_logits_is_exact():
    case = _case("case_1")
    crop = hyctas.CropInfo(input_hw=(1024, 2048), valid_hw=(720, 1280))
    logits = torch.from_numpy(case["logits"])
    full = torch.nn.functional.interpolate(logits, size=(1024, 2048), mode="bilinear",
                                           align_corners=False)
    assert torch.equal(hyctas._upsample_valid_region(logits, crop), full[..., :720, :1280])
    class_map = hyctas.postprocess(case["logits"], crop, (720, 1280))
    np.testing.assert_array_equal(class_map, case["class_map"])


@pytest.mark.parametrize("input_hw, valid_hw", [
    ((1024, 2048), (720, 1280)), ((1024, 2048), (1024, 2048)), ((736, 1280), (720, 1280)),
    ((1024, 2048), (37, 900)), ((1024, 2048), (1023, 2047))])
def test_banded_upsampling_and_argmax_equal_the_whole(input_hw, valid_hw):
    """The class map computed band by band (postprocess) is the argmax of the whole
    upsampled region, ties included (the first class wins)."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 19, input_hw[0] // 4, input_hw[1] // 4, generator=generator)
    logits[..., ::7, :] = logits[..., ::7, :].round()  # rows of exact ties after upsampling
    crop = hyctas.CropInfo(input_hw=input_hw, valid_hw=valid_hw)
    whole = hyctas._upsample_valid_region(logits, crop).argmax(dim=1)[0].to(torch.uint8)
    np.testing.assert_array_equal(hyctas.postprocess(logits, crop, valid_hw), whole.numpy())


# --- the network against the golden cases --------------------------------------------------

@pytest.mark.slow  # the S network at 1024x2048
def test_s_reference_case(s_reference):
    _, crop, logits = s_reference
    _check_against_case(logits, crop, _case("case_1"))


def test_s_native_crop_case(s_model, image_1):
    tensor, crop = hyctas.preprocess(np.ascontiguousarray(image_1[CROP_ROWS, CROP_COLS]), "native")
    assert tensor.shape == (1, 3, 368, 640) and crop.valid_hw == crop.input_hw == (368, 640)
    logits = _run(s_model, tensor)
    assert logits.shape == (1, 19, 92, 160)  # s4 92x160, s8 46x80, s16 23x40, s32 12x20
    _check_against_case(logits, crop, _case("case_1_crop_368x640_native"))


@pytest.mark.slow  # the M network at 1024x2048
def test_m_reference_case(image_1):
    model = hyctas.load_checkpoint(hyctas.build_module("M"),
                                   _need(HYCTAS / "hyctas_m_cityscapes_random_seed0.pth"))
    tensor, crop = hyctas.preprocess(image_1, "reference")
    _check_against_case(_run(model, tensor), crop, _case("case_m_1"))


@pytest.mark.slow  # ONNX export and a 1024x2048 run
def test_onnx_export_matches_golden(s_model, s_reference, tmp_path):
    tensor, crop, _ = s_reference
    _, (logits,) = export_and_run_onnx(s_model, tensor, tmp_path / "hyctas_s.onnx", ("logits",))
    _check_against_case(logits, crop, _case("case_1"))


# --- the package's backends and pipeline (model:=hyctas) against the golden cases ------------
def _hyctas_pipeline(backend: str, path: str, image_hw):
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import build_pipeline

    if backend == "openvino":
        pytest.importorskip("openvino")
    config = NodeConfig.from_mapping({
        "model": "hyctas", "hyctas_path": path, "backend": backend, "device": "cpu",
        "weights": str(_need(HYCTAS / "hyctas_s_cityscapes_random_seed0.pth")),
        "camera_resolution": [image_hw[1], image_hw[0]]})
    return build_pipeline(config)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_pipeline_backends_match_native_crop_case(backend, image_1):
    crop_bgr = np.ascontiguousarray(image_1[CROP_ROWS, CROP_COLS])
    pipeline = _hyctas_pipeline(backend, "native", crop_bgr.shape[:2])
    tensor, crop = hyctas.preprocess(crop_bgr, "native")
    logits = pipeline.backend.infer(tensor)[0]
    _check_against_case(np.asarray(logits), crop, _case("case_1_crop_368x640_native"))
    assert (pipeline(crop_bgr).seg_mask == _case("case_1_crop_368x640_native")["class_map"]).mean() \
        >= MIN_AGREEMENT


@pytest.mark.slow  # export and runs at 1024x2048
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_pipeline_backends_match_reference_case(backend, image_1):
    pipeline = _hyctas_pipeline(backend, "reference", image_1.shape[:2])
    tensor, crop = hyctas.preprocess(image_1, "reference")
    _check_against_case(np.asarray(pipeline.backend.infer(tensor)[0]), crop, _case("case_1"))
    assert (pipeline(image_1).seg_mask == _case("case_1")["class_map"]).mean() >= MIN_AGREEMENT
