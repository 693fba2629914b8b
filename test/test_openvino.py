"""The OpenVINO backend: fp32 the same network as PyTorch (golden case, shared
post-processing), compiled models reused from the engine cache, bf16 and int8 opt-in and
refused with a reason where they cannot run.

Most tests use a one-convolution network with the real one's three outputs: it exports and
compiles in a moment, and the backend only sees an ONNX file.
"""
import sys

import numpy as np
import pytest
import torch

from conftest import TinyNet, match_detections, rel_l2

pytest.importorskip("openvino", reason="the openvino backend needs the Python module "
                                       "'openvino' (pip install openvino; x86-64)")

from hybridnets_ros.backends import BackendUnavailable, create_backend  # noqa: E402
from hybridnets_ros.backends import openvino_backend  # noqa: E402
from hybridnets_ros.backends.engine_cache import EngineCache  # noqa: E402
from hybridnets_ros.core.registry import adapter  # noqa: E402
from hybridnets_ros.pipeline.pipeline import Pipeline  # noqa: E402

OUTPUTS = ("regression", "classification", "segmentation")
TINY_HW = (128, 128)
AS_HYBRIDNETS = adapter("hybridnets")  # TinyNet's outputs have HybridNets' form


@pytest.fixture(scope="module")
def tiny_net():
    return TinyNet().eval()


@pytest.fixture(scope="module")
def tiny_input():
    return np.random.default_rng(0).standard_normal((1, 3, *TINY_HW), dtype=np.float32)


def outputs_of(backend, inputs):
    raw = backend.infer(inputs)
    return [np.array(getattr(raw, name)) for name in OUTPUTS]


def torch_outputs(model, inputs):
    with torch.inference_mode():
        return [t.numpy() for t in model(torch.from_numpy(inputs))]


# --- fp32: exact ------------------------------------------------------------------------

@pytest.mark.slow  # exports the golden network to ONNX
def test_fp32_matches_golden_outputs_and_results(golden_model, golden_onnx, golden_case):
    backend = create_backend("openvino", golden_model, adapter("hybridnets"))
    for name, value in zip(OUTPUTS, outputs_of(backend, golden_case["input_tensor"])):
        assert rel_l2(value, golden_case[name]) < 1e-4, name
    result = Pipeline(backend)(golden_case["input_bgr"])
    d = result.detections
    match_detections(d.boxes, d.scores, d.classes, golden_case["det_boxes_xyxy"],
                     golden_case["det_scores"], golden_case["det_classes"])
    assert (result.seg_mask == golden_case["seg_mask"]).mean() >= 0.999


def test_fp32_is_exact_and_reuses_its_output_buffers(tiny_net, tiny_input, tmp_path):
    backend = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=EngineCache(tmp_path))
    first = backend.infer(tiny_input)
    views = [getattr(first, name) for name in OUTPUTS]
    for name, ours, reference in zip(OUTPUTS, outputs_of(backend, torch.from_numpy(tiny_input)),
                                     torch_outputs(tiny_net, tiny_input)):
        assert rel_l2(ours, reference) < 1e-5, name
    second = backend.infer(tiny_input)
    assert all(np.shares_memory(getattr(second, name), view)
               for name, view in zip(OUTPUTS, views))


# --- the compiled-model cache -------------------------------------------------------------

def test_second_start_loads_the_compiled_model_from_the_cache(tiny_net, tiny_input, tmp_path):
    cache = EngineCache(tmp_path)
    first = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=cache)
    first.prepare(TINY_HW)
    blob = cache.path(first.compile_key(TINY_HW), ".blob")
    assert blob.parent == tmp_path and blob.name.startswith("openvino-fp32-128x128-")
    assert cache.lookup(first.compile_key(TINY_HW), ".blob") == blob  # sidecar and sha256
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "nothing outside the cache's files"
    built = blob.stat().st_mtime_ns
    second = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=cache)
    second.prepare(TINY_HW)
    assert blob.stat().st_mtime_ns == built  # imported, not compiled again
    for a, b in zip(outputs_of(first, tiny_input), outputs_of(second, tiny_input)):
        np.testing.assert_array_equal(a, b)


def damage(path, seed: int = 1) -> None:
    """4 KiB of noise in the middle of a file (at most a quarter of it), as issue 31 did."""
    data = bytearray(path.read_bytes())
    size = min(4096, len(data) // 4)
    middle = len(data) // 2
    data[middle:middle + size] = np.random.default_rng(seed).bytes(size)
    path.write_bytes(bytes(data))


def test_a_damaged_compiled_model_is_compiled_again_not_imported(tiny_net, tiny_input, tmp_path,
                                                                 caplog):
    cache = EngineCache(tmp_path)
    create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=cache).prepare(TINY_HW)
    # Wherever the compiled model went (before issue 31, OpenVINO's CACHE_DIR in a folder).
    blobs = [*tmp_path.glob("openvino-*.blob"), *tmp_path.glob("openvino-*/*.blob")]
    assert len(blobs) == 1, sorted(p.name for p in tmp_path.iterdir())
    damage(blobs[0])
    damaged = blobs[0].read_bytes()
    with caplog.at_level("WARNING"):
        again = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=cache)
        ours = outputs_of(again, tiny_input)
    assert f"not loading cached {blobs[0].name}: file changed since it was built (sha256 " \
        in caplog.text, caplog.text
    assert blobs[0].read_bytes() != damaged  # compiled and written again
    for name, value, reference in zip(OUTPUTS, ours, torch_outputs(tiny_net, tiny_input)):
        assert rel_l2(value, reference) < 1e-5, name
    # Intact bytes that OpenVINO refuses (another build wrote them) with a matching sidecar:
    # OpenVINO's own check names the problem, and the model is compiled again.
    key = again.compile_key(TINY_HW)
    with cache.locked(key, ".blob"):
        cache.store(key, ".blob", lambda out: out.write_bytes(b"not a compiled model" * 100))
    caplog.clear()
    with caplog.at_level("WARNING"):
        third = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=cache)
        ours = outputs_of(third, tiny_input)
    assert f"openvino cannot import cached {blobs[0].name} (" in caplog.text, caplog.text
    assert "it will be compiled again" in caplog.text
    for name, value, reference in zip(OUTPUTS, ours, torch_outputs(tiny_net, tiny_input)):
        assert rel_l2(value, reference) < 1e-5, name
    assert cache.lookup(key, ".blob") == blobs[0]


def test_compiled_models_are_kept_apart_by_shape_precision_and_weights(tiny_net, tmp_path):
    backend = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, cache=EngineCache(tmp_path))
    other = create_backend("openvino", TinyNet(seed=1), adapter=AS_HYBRIDNETS, cache=EngineCache(tmp_path))
    names = {backend.compile_key(TINY_HW).filename(".blob"),
             backend.compile_key((256, 128)).filename(".blob"),
             backend.compile_key(TINY_HW, batch=2).filename(".blob"),
             other.compile_key(TINY_HW).filename(".blob")}
    backend.precision = "bf16"  # only the key is asked for: nothing is compiled
    names.add(backend.compile_key(TINY_HW).filename(".blob"))
    assert len(names) == 5


# --- bf16, int8 and refusals --------------------------------------------------------------

def test_bf16_is_refused_where_the_cpu_lacks_it(tiny_net, monkeypatch):
    monkeypatch.setattr(openvino_backend, "cpu_flags", lambda: {"avx2", "avx512f"})
    with pytest.raises(BackendUnavailable, match="openvino bf16 needs a CPU with native bf16 "
                                                 r"\(avx512_bf16 or amx_bf16.*has neither.*"
                                                 "use precision fp32"):
        create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, precision="bf16")


def test_bf16_runs_close_to_fp32_where_the_cpu_has_it(tiny_net, tiny_input, tmp_path):
    reason = openvino_backend.bf16_unsupported(openvino_backend.import_openvino().Core())
    if reason:
        pytest.skip(reason)
    backend = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, precision="bf16", cache=EngineCache(tmp_path))
    for name, ours, reference in zip(OUTPUTS, outputs_of(backend, tiny_input),
                                     torch_outputs(tiny_net, tiny_input)):
        assert 0 < rel_l2(ours, reference) < 2e-2, name  # bf16 keeps 8 bits of mantissa


@pytest.mark.parametrize("options, message", [
    ({"precision": "fp16"}, "openvino runs fp32, bf16, int8, not 'fp16'"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"device": "cuda"}, "device cpu (the openvino backend runs on the CPU"),
    ({"precision": "int8"}, "needs calibration images"),
])
def test_unavailable_choices_are_refused_with_a_reason(tiny_net, options, message):
    with pytest.raises(BackendUnavailable) as info:
        create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, **options)
    assert message in str(info.value)


def test_int8_without_nncf_points_to_onnxruntime(tiny_net, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nncf", None)  # as if it were not installed
    with pytest.raises(BackendUnavailable, match="'nncf'.*or use onnxruntime int8"):
        create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, precision="int8", calib=tmp_path)


@pytest.mark.slow  # imports NNCF and calibrates
def test_int8_is_quantised_once_and_kept_in_the_cache(tiny_net, sample_images, tmp_path):
    pytest.importorskip("nncf")
    cache = EngineCache(tmp_path)
    options = {"precision": "int8", "calib": sample_images[0].parent, "cache": cache}
    hw = (384, 640)  # what 1280x720 frames give at --size 640
    first = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, **options)
    first.prepare(hw)
    (packed,) = tmp_path.glob("openvino-int8-int8-384x640-*.npz")
    assert cache.sidecar(packed).exists()
    built = packed.stat().st_mtime_ns
    second = create_backend("openvino", tiny_net, adapter=AS_HYBRIDNETS, **options)
    inputs = np.random.default_rng(1).uniform(-2, 2, (1, 3, *hw)).astype(np.float32)
    ours = outputs_of(second, inputs)
    assert packed.stat().st_mtime_ns == built  # loaded, not quantised again
    for name, value, reference in zip(OUTPUTS, ours, torch_outputs(tiny_net, inputs)):
        assert 0 < rel_l2(value, reference) < 0.05, name
