"""The TensorRT and torch2trt backends' real code against stand-ins of TensorRT 10.x and
11.x and of torch2trt (test/standins): TensorRT, torch2trt and CUDA cannot exist on the
machines these tests run on. The stand-in engine runs the parsed ONNX with ONNX Runtime on
the CPU over the buffers the backend bound, so build, engine cache, load, binding by name,
batches, output order and dtypes, precisions and their outputs are checked for real.

The network is the seeded random HybridNets at a small input (256x256, what a 1280x720
camera gives with input_size 256) to keep builds short; ONNX files are shared through the
session's cache.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

import standins
from conftest import rel_l2, small_network_onnx
from hybridnets_ros.backends import BackendUnavailable, create_backend
from hybridnets_ros.backends.onnx_export import cached_onnx
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.core.models.hybridnets.preprocess import letterbox

# Engines of the whole network through the stand-ins: `make test` runs them, the fast loop
# (-m "not slow") does not.
pytestmark = pytest.mark.slow

HYBRIDNETS = adapter("hybridnets")
INPUT_NAME, OUTPUT_NAMES = HYBRIDNETS.input_name, HYBRIDNETS.output_names

INPUT_SIZE = 256
HW = letterbox((720, 1280), INPUT_SIZE, 128).input_hw


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Two different network inputs [2,3,H,W]."""
    return np.random.default_rng(0).normal(size=(2, 3, *HW)).astype(np.float32)


def onnxruntime_outputs(path, inputs: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})


@pytest.fixture(scope="module")
def reference(hybridnets_module, frames, session_cache) -> list[np.ndarray]:
    """ONNX Runtime on the fp32 export, frame by frame."""
    path = cached_onnx(hybridnets_module, HYBRIDNETS, HW)
    per_frame = [onnxruntime_outputs(path, frames[i:i + 1]) for i in range(len(frames))]
    return [np.concatenate(outputs) for outputs in zip(*per_frame)]


def tensorrt(model, precision="fp32", **options):
    return create_backend("tensorrt", model, HYBRIDNETS, device="cuda", precision=precision,
                          input_size=INPUT_SIZE, **options)


def plan_of(backend, batch=1) -> dict:
    """How the stand-in built the backend's engine: version, typing, precision flags."""
    header = backend.trt.plan_header(backend.engine_path(HW, batch).read_bytes())
    return {k: header[k] for k in ("version", "strongly_typed", "builder_flags")}


def as_numpy(raw) -> list[np.ndarray]:
    return [getattr(raw, name).numpy() for name in OUTPUT_NAMES]


@pytest.mark.parametrize("version", standins.GENERATIONS)
def test_fp32_engine_built_cached_loaded_and_equal_to_onnxruntime(
        hybridnets_module, frames, reference, monkeypatch, caplog, version):
    trt = standins.install(monkeypatch, version)
    backend = tensorrt(hybridnets_module)
    raw = backend.infer(frames[:1])
    for name, got, expected in zip(OUTPUT_NAMES, as_numpy(raw), reference):
        assert got.dtype == np.float32 and got.shape == expected[:1].shape, name
        np.testing.assert_allclose(got, expected[:1], rtol=1e-5, atol=1e-5, err_msg=name)
    path = backend.engine_path(HW)
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    assert meta["key"]["runtime"] == f"tensorrt {version}"
    assert meta["key"]["gpu"] == "TensorRT stand-in on the CPU"
    assert plan_of(backend) == {"version": version, "strongly_typed": True, "builder_flags": []}
    assert backend.describe() == f"tensorrt {version} fp32 on cpu"
    assert trt.__version__ == version

    caplog.clear()
    with caplog.at_level(logging.INFO, "hybridnets_ros"):
        again = tensorrt(hybridnets_module)
        second = again.infer(torch.from_numpy(frames[:1]))
    assert "using cached tensorrt fp32 engine" in caplog.text and "building" not in caplog.text
    for got, expected in zip(as_numpy(second), reference):
        np.testing.assert_allclose(got, expected[:1], rtol=1e-5, atol=1e-5)


def test_batch_n_binds_by_name_and_takes_tensors_without_copying(hybridnets_module, frames, reference,
                                                                 monkeypatch):
    standins.install(monkeypatch)
    backend = tensorrt(hybridnets_module)
    assert backend.batching
    backend.prepare(HW, batch=2)
    inputs = torch.from_numpy(frames)
    raw = backend.infer(inputs)
    state = backend.engines[(2, *HW)]
    assert state.context.get_tensor_address(INPUT_NAME) == inputs.data_ptr()  # bound, not copied
    for name, got, expected in zip(OUTPUT_NAMES, as_numpy(raw), reference):
        assert got.shape[0] == 2
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4, err_msg=name)
    # The outputs are the engine's tensors of those names, whatever order the engine lists.
    engine = state.engine
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert sorted(names) == sorted((INPUT_NAME, *OUTPUT_NAMES))
    assert all(raw_tensor is state.buffers[name]
               for name, raw_tensor in zip(OUTPUT_NAMES, as_numpy_tensors(raw)))


def as_numpy_tensors(raw):
    return [getattr(raw, name) for name in OUTPUT_NAMES]


def test_stale_and_unloadable_engines_are_rebuilt(hybridnets_module, frames, reference, monkeypatch,
                                                  caplog):
    standins.install(monkeypatch, "10.3.0")
    old = tensorrt(hybridnets_module).engine_path(HW)
    monkeypatch.undo()
    standins.install(monkeypatch, "10.4.0")  # another TensorRT: another key, a new engine
    backend = tensorrt(hybridnets_module)
    new = backend.engine_path(HW)
    assert new != old and old.exists() and plan_of(backend)["version"] == "10.4.0"

    # A file that passes the cache's checks but does not deserialize (an engine of another
    # TensorRT under this key, its sidecar rewritten to match): discarded and rebuilt once.
    from hybridnets_ros.backends.engine_cache import file_digest
    new.write_bytes(old.read_bytes())
    sidecar = new.with_name(new.name + ".json")
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = file_digest(new)
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        raw = tensorrt(hybridnets_module).infer(frames[:1])
    assert "could not load" in caplog.text and "expecting library version 10.4.0" in caplog.text
    assert plan_of(backend)["version"] == "10.4.0"
    np.testing.assert_allclose(as_numpy(raw)[2], reference[2][:1], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def golden_reference(golden_model, frames, session_cache) -> list[np.ndarray]:
    """ONNX Runtime on the golden network's fp32 export: fp16 needs a network whose
    activations fit in half precision (the seeded random one's reach 1e6)."""
    return onnxruntime_outputs(cached_onnx(golden_model, HYBRIDNETS, HW), frames[:1])


@pytest.mark.parametrize("version", standins.GENERATIONS)
def test_fp16_engine_is_strongly_typed_from_the_fp16_onnx(golden_model, frames, golden_reference,
                                                          monkeypatch, version):
    standins.install(monkeypatch, version)
    backend = tensorrt(golden_model, precision="fp16")
    raw = backend.infer(frames[:1])
    assert plan_of(backend) == {"version": version, "strongly_typed": True, "builder_flags": []}
    assert "fp16 keep-io-fp32" in backend.engine_key(HW, None).runtime  # the rule is in the key
    engine = backend.engines[(1, *HW)].engine
    assert {engine.get_tensor_dtype(n) for n in (INPUT_NAME, *OUTPUT_NAMES)} == {
        backend.trt.DataType.FLOAT}  # fp16 inside, float32 at the edges
    for name, got, expected in zip(OUTPUT_NAMES, as_numpy(raw), golden_reference):
        assert got.dtype == np.float32
        assert rel_l2(got, expected) < 2e-2, name
        assert not np.array_equal(got, expected), f"{name}: not computed in fp16"


def test_fp16_onnx_against_the_golden_case(golden_onnx, golden_case, tmp_path):
    """The fp16 file TensorRT builds fp16 engines from, run by ONNX Runtime on this CPU
    (half-precision storage between ops): measured 4.3e-3 (regression), 6.0e-3
    (classification), 1.2e-3 (segmentation) relative L2, 99.8 % of the mask unchanged."""
    import onnx
    from hybridnets_ros.backends.onnx_export import convert_to_fp16
    path = convert_to_fp16(golden_onnx, tmp_path / "fp16.onnx")
    proto = onnx.load(str(path))
    weights = [i.data_type for i in proto.graph.initializer if i.data_type in (1, 10)]
    assert weights.count(10) > 0.9 * len(weights)  # 10: FLOAT16, 1: FLOAT
    assert {v.type.tensor_type.elem_type for v in (*proto.graph.input, *proto.graph.output)} == {1}
    outputs = onnxruntime_outputs(path, golden_case["input_tensor"])
    for name, got in zip(OUTPUT_NAMES, outputs):
        assert rel_l2(got, golden_case[name]) < 2e-2, name
    agreement = (outputs[2].argmax(1) == golden_case["segmentation"].argmax(1)).mean()
    assert agreement > 0.995


def test_tensorrt_8_6_builds_weakly_typed_with_the_fp16_flag(hybridnets_module, frames, reference,
                                                             monkeypatch):
    standins.install(monkeypatch, "8.6.1")
    backend = tensorrt(hybridnets_module, precision="fp16")
    raw = backend.infer(frames[:1])
    assert plan_of(backend) == {"version": "8.6.1", "strongly_typed": False,
                                "builder_flags": ["FP16"]}
    np.testing.assert_allclose(as_numpy(raw)[0], reference[0][:1], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def calib_folder(sample_images):
    return sample_images[0].parent


@pytest.mark.slow  # quantises the whole network once (~20 s); every generation reuses it
@pytest.mark.parametrize("version, typed, flags", [("10.3.0", True, []), ("11.1.0", True, []),
                                                   ("8.6.1", False, ["FP16", "INT8"])])
def test_int8_engine_from_the_qdq_model(golden_model, calib_folder, monkeypatch, version,
                                        typed, flags):
    from hybridnets_ros.backends.quantize import calibration_frames
    from hybridnets_ros.core.models.hybridnets.preprocess import Preprocessor
    standins.install(monkeypatch, version)
    backend = tensorrt(golden_model, precision="int8", calib=str(calib_folder),
                       source_hw=(720, 1280))
    assert not backend.batching  # calibrated for batch 1
    frame = calibration_frames(calib_folder, (720, 1280), Preprocessor(INPUT_SIZE))[0]  # a camera frame
    raw = backend.infer(frame)
    assert plan_of(backend) == {"version": version, "strongly_typed": typed, "builder_flags": flags}
    expected = onnxruntime_outputs(cached_onnx(golden_model, HYBRIDNETS, HW), frame)
    for name, got, want in zip(OUTPUT_NAMES, as_numpy(raw), expected):
        assert got.dtype == np.float32 and not np.array_equal(got, want), f"{name}: not int8"
        # Measured with this stand-in (ONNX Runtime running the Q/DQ model): classification
        # 0.34 (scores near 0 in steps of ~0.005), the others below 0.3.
        assert rel_l2(got, want) < (0.5 if name == "classification" else 0.3), name


def test_parser_takes_the_tensorrt_qdq_form_only(tmp_path, monkeypatch):
    from hybridnets_ros.backends.quantize import quantize_onnx
    trt = standins.install(monkeypatch)
    fp32 = small_network_onnx(tmp_path / "small.onnx", 16)
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(1, 3, 16, 16)).astype(np.float32) for _ in range(2)]
    logger = trt.Logger(trt.Logger.ERROR)

    def parse(path):
        parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
        return parser.parse_from_file(str(path)), [str(parser.get_error(i))
                                                    for i in range(parser.num_errors)]

    ok, errors = parse(quantize_onnx(fp32, tmp_path / "ort.onnx", frames))
    assert not ok and any("uint8" in e and "int8" in e for e in errors)
    tensorrt_form = quantize_onnx(fp32, tmp_path / "trt.onnx", frames, for_tensorrt=True)
    assert parse(tensorrt_form) == (True, [])


def test_parse_errors_are_reported(tmp_path, hybridnets_module, monkeypatch):
    from hybridnets_ros.backends.tensorrt_backend import build_engine
    trt = standins.install(monkeypatch)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(RuntimeError, match="TensorRT cannot parse .*MODEL_DESERIALIZE_FAILED"):
        build_engine(trt, trt.Logger(), broken, tmp_path / "out.engine", "fp32")


def test_stand_in_keeps_the_rules_of_each_generation(tmp_path, monkeypatch):
    """What makes the backend's version switch necessary, as the stand-in models it."""
    trt = standins.install(monkeypatch, "11.1.0")
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    with pytest.raises(AttributeError):
        trt.Builder(trt.Logger()).create_builder_config().int8_calibrator = object()
    monkeypatch.undo()
    trt = standins.install(monkeypatch, "10.3.0")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    small = small_network_onnx(tmp_path / "small.onnx", 16)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(network, logger).parse_from_file(str(small))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None  # flags and strong typing
    monkeypatch.undo()
    trt = standins.install(monkeypatch, "8.6.1")
    logger = trt.Logger(trt.Logger.ERROR)
    parser = trt.OnnxParser(trt.Builder(logger).create_network(0), logger)
    assert not parser.parse_from_file(str(small))
    assert "explicit batch" in parser.get_error(0).desc()


# --- torch2trt ---------------------------------------------------------------------------

def torch2trt(model, precision="fp32", **options):
    return create_backend("torch2trt", model, HYBRIDNETS, device="cuda", precision=precision,
                          input_size=INPUT_SIZE, **options)


@pytest.mark.slow  # torch2trt converts the whole network (~25 s); 10.x: the next test
def test_torch2trt_fp32_equals_onnxruntime(hybridnets_module, frames, reference, monkeypatch):
    version = "11.1.0"
    standins.install(monkeypatch, version, torch2trt=True)
    backend = torch2trt(hybridnets_module)
    raw = backend.infer(frames[:1])
    assert backend.runtime_id() == f"torch2trt 0.5.0, tensorrt {version}"
    for name, got, expected in zip(OUTPUT_NAMES, as_numpy(raw), reference):
        np.testing.assert_allclose(got, expected[:1], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.slow  # torch2trt converts the whole network twice (~45 s)
def test_torch2trt_fp16_and_int8_use_its_builder_flags_on_tensorrt_10(
        hybridnets_module, frames, calib_folder, monkeypatch):
    standins.install(monkeypatch, "10.3.0", torch2trt=True)
    assert plan_of(torch2trt(hybridnets_module, "fp16"))["builder_flags"] == ["FP16"]
    int8 = torch2trt(hybridnets_module, "int8", calib=str(calib_folder), source_hw=(720, 1280))
    assert plan_of(int8) == {"version": "10.3.0", "strongly_typed": False,
                             "builder_flags": ["FP16", "INT8"]}
    assert int8.infer(frames[:1]).segmentation.shape == (1, 3, *HW)


def test_torch2trt_on_tensorrt_11_is_fp32_only(hybridnets_module, monkeypatch):
    standins.install(monkeypatch, "11.1.0", torch2trt=True)
    with pytest.raises(BackendUnavailable, match="TensorRT 11.1.0 removed: use backend tensorrt"):
        torch2trt(hybridnets_module, "fp16")
    # What torch2trt itself does there (the reason for the refusal above):
    import torch2trt as module
    with pytest.raises(AttributeError, match="FP16"):
        module.torch2trt(torch.nn.Conv2d(3, 4, 1).eval(), [torch.zeros(1, 3, 8, 8)],
                         fp16_mode=True)


def test_trtmodule_runs_what_torch2trt_built(monkeypatch):
    standins.install(monkeypatch, torch2trt=True)
    import torch2trt as module
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Sigmoid()).eval()
    x = torch.randn(1, 3, 8, 8)
    converted = module.torch2trt(net, [x], input_names=["x"], output_names=["y"])
    reloaded = module.TRTModule(converted.engine, ["x"], ["y"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), net(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # engines of batch 1 and 2 (~50 s in a fresh session)
def test_on_device_pipeline_batches_through_tensorrt(hybridnets_module, sample_images, monkeypatch):
    """The CUDA data path's whole chain on CPU tensors: TorchPreprocessor into the batch
    buffer, the engine binding that tensor directly, NMS and masks on the device."""
    import cv2
    from hybridnets_ros.pipeline.pipeline import Pipeline
    standins.install(monkeypatch)
    pipeline = Pipeline(tensorrt(hybridnets_module), INPUT_SIZE, processing_on_device=True)
    pipeline.batch_size = 2
    images = [cv2.imread(str(path)) for path in sample_images[:2]]
    batched = pipeline.run_batch(images)
    for image, result in zip(images, batched):
        alone = pipeline(image)
        assert result.batch_size == 2
        np.testing.assert_array_equal(result.seg_mask, alone.seg_mask)
        np.testing.assert_allclose(result.detections.boxes, alone.detections.boxes, atol=1e-3)


def test_cuda_buffers_stay_the_default():
    from hybridnets_ros.backends.tensorrt_backend import CudaBuffers, TensorRTBackend
    assert TensorRTBackend.buffers_type is CudaBuffers
    with pytest.raises(BackendUnavailable, match="runs on CUDA devices, not 'cpu'"):
        CudaBuffers("cpu", "tensorrt")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailable, match="tensorrt needs CUDA"):
            CudaBuffers("cuda", "tensorrt")
