"""Backends behind one interface: parity on the golden case, `auto`, errors naming what is
missing, the engine cache's key and invalidation, INT8 quantisation plumbing.

TensorRT, torch2trt and CUDA cannot exist on the machine these tests were written on. Where
a test needs them to be "present" it fakes exactly that (torch.cuda.is_available, a stub
`tensorrt` module, engine files with made-up bytes) and says so; everything else runs for
real. Tests marked requires_cuda / requires_tensorrt run where the hardware exists.
"""
import json
import logging
import sys
import tempfile
import threading
import types

import cv2
import numpy as np
import pytest
import torch

from conftest import (TinyNet, rel_l2, requires_cuda, requires_tensorrt, requires_torch2trt,
                      small_network_onnx)
from hybridnets_ros.backends import BackendUnavailable, available_backends, create_backend
from hybridnets_ros.backends import registry
from hybridnets_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from hybridnets_ros.backends.torch_backend import TorchBackend
from hybridnets_ros.backends.engine_cache import EngineCache, EngineKey, weights_digest
from hybridnets_ros.backends.onnx_export import cached_onnx
from hybridnets_ros.core.models.hybridnets.preprocess import Preprocessor
from hybridnets_ros.core.registry import adapter

HYBRIDNETS = adapter("hybridnets")

OUTPUTS = ("regression", "classification", "segmentation")


def outputs_of(backend, inputs):
    raw = backend.infer(inputs)
    return [torch.as_tensor(getattr(raw, k)).float().cpu().numpy() for k in OUTPUTS]


# --- parity ---------------------------------------------------------------------------

@pytest.mark.slow  # exports the golden network to ONNX
def test_torch_and_onnxruntime_agree_on_the_golden_case(golden_model, golden_onnx, golden_case):
    x = golden_case["input_tensor"]
    ort_out = outputs_of(create_backend("onnxruntime", golden_model, HYBRIDNETS), x)
    eager_out = outputs_of(create_backend("torch", golden_model, HYBRIDNETS, optimize=False), x)
    for name, a, b in zip(OUTPUTS, ort_out, eager_out):
        assert rel_l2(a, golden_case[name]) < 1e-4 and rel_l2(b, golden_case[name]) < 1e-4
        assert rel_l2(a, b) < 1e-4, name


@pytest.mark.slow  # exports the golden network to ONNX
def test_onnxruntime_reuses_its_output_buffers(golden_model, golden_onnx, golden_case):
    backend = create_backend("onnxruntime", golden_model, HYBRIDNETS)
    first = backend.infer(golden_case["input_tensor"])
    second = backend.infer(torch.from_numpy(golden_case["input_tensor"]))  # CPU tensor too
    assert all(getattr(first, k) is getattr(second, k) for k in OUTPUTS)


@pytest.mark.slow  # traces the network
def test_torch_backend_leaves_the_callers_model_alone(hybridnets_module):
    before = {k: v.clone() for k, v in list(hybridnets_module.state_dict().items())[:5]}
    create_backend("torch", hybridnets_module, HYBRIDNETS).prepare((128, 128))
    param = next(hybridnets_module.parameters())
    assert param.dtype == torch.float32 and param.is_contiguous()
    assert all(torch.equal(hybridnets_module.state_dict()[k], v) for k, v in before.items())


# --- auto and errors -------------------------------------------------------------------

def test_auto_follows_the_rule_until_bench_has_measured_this_cpu(hybridnets_module, monkeypatch,
                                                                  tmp_path, caplog):
    pytest.importorskip("openvino", reason="the rule chooses between onnxruntime and openvino")
    from hybridnets_ros.backends import engine_choice
    from hybridnets_ros.backends.cpu import cpu_flags
    monkeypatch.setenv("HYBRIDNETS_CACHE", str(tmp_path))
    ruled = "openvino" if cpu_flags() & {"avx512f", "amx_tile"} else "onnxruntime"
    with caplog.at_level(logging.INFO, "hybridnets_ros.backends.registry"):
        backend = create_backend("auto", hybridnets_module, HYBRIDNETS)  # compiles nothing until the first frame
    assert backend.name == ruled and backend.precision == "fp32"
    assert f"picked {ruled}" in caplog.text and "no measurement yet" in caplog.text
    # bench's measurement of this CPU: the other engine was faster
    other = "onnxruntime" if ruled == "openvino" else "openvino"
    engine_choice.record_measurement("hybridnets", {ruled: 250.0, other: 200.0, "torch": 400.0}, 640)
    caplog.clear()
    with caplog.at_level(logging.INFO, "hybridnets_ros.backends.registry"):
        assert create_backend("auto", hybridnets_module, HYBRIDNETS).name == other
    assert f"picked {other}" in caplog.text and f"{other} 200 ms, {ruled} 250 ms" in caplog.text
    # ... for that network only, and for these engine versions only
    assert engine_choice.measured_choice("hydra", ["onnxruntime", "openvino"]) is None
    # ... nor with the instruction sets capped (in effect another CPU)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert engine_choice.measured_choice("hybridnets", ["onnxruntime", "openvino"], 640) is None
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert engine_choice.measured_choice("hybridnets", ["onnxruntime", "openvino"], 640)
    # ... and at that letterbox size only (the order can flip with it)
    assert engine_choice.measured_choice("hybridnets", ["onnxruntime", "openvino"], 448) is None
    assert create_backend("auto", hybridnets_module, HYBRIDNETS, input_size=448).name == ruled
    monkeypatch.setattr(engine_choice, "machine_key", lambda: "another CPU | openvino 99")
    assert create_backend("auto", hybridnets_module, HYBRIDNETS).name == ruled
    assert available_backends("cpu") == ["torch", "onnxruntime", "openvino"]


def test_auto_picks_onnxruntime_on_cpu_without_openvino(hybridnets_module, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if it were not installed
    with caplog.at_level(logging.INFO, "hybridnets_ros.backends.registry"):
        backend = create_backend("auto", hybridnets_module, HYBRIDNETS)
    assert isinstance(backend, OnnxRuntimeBackend) and backend.precision == "fp32"
    assert "picked onnxruntime" in caplog.text
    assert "openvino not used: missing Python module 'openvino'" in caplog.text
    assert available_backends("cpu") == ["torch", "onnxruntime"]


# onnx: a rosdep-only install (no rosdep key has onnx, nor openvino) has onnxruntime but not
# the export it runs from. Modules blocked in sys.modules, as if they were not installed.
@pytest.mark.parametrize("blocked, lacking", [(("onnxruntime", "openvino"), "onnxruntime"),
                                              (("onnx", "openvino"), "onnx")])
def test_auto_falls_back_to_torch_without_onnxruntime_or_onnx(hybridnets_module, monkeypatch, caplog,
                                                              blocked, lacking):
    for module in blocked:
        monkeypatch.setitem(sys.modules, module, None)
    with caplog.at_level(logging.INFO, "hybridnets_ros.backends.registry"):
        backend = create_backend("auto", hybridnets_module, HYBRIDNETS)
    assert isinstance(backend, TorchBackend)
    assert f"missing Python module '{lacking}'" in caplog.text
    with pytest.raises(BackendUnavailable, match=f"missing Python module '{lacking}'.*"
                                                 "available on cpu: torch$"):
        create_backend("onnxruntime", hybridnets_module, HYBRIDNETS)


def test_every_backend_that_runs_the_onnx_export_needs_onnx(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    for name in ("onnxruntime", "openvino", "tensorrt"):
        assert "Python module 'onnx' (the ONNX export; pip install onnx)" in registry.missing(name)
    assert not any("'onnx'" in need for need in registry.missing("torch"))


@pytest.mark.parametrize("name, device, precision, expected", [
    ("tensorrt", "cpu", "fp16", ["missing a CUDA device", "runs on NVIDIA GPUs only",
                                 "Python module 'tensorrt'", "available on cpu: torch, onnxruntime"]),
    ("tensorrt", "cuda", "fp16", ["missing a CUDA device", "available on cuda: none"]),
    ("torch2trt", "cuda", "fp16", ["missing a CUDA device", "Python module 'torch2trt'"]),
    ("torch", "cuda", "fp32", ["missing a CUDA device", "torch.cuda.is_available() is False"]),
    ("onnxruntime", "cuda:0", "fp32", ["missing a CUDA device"]),
    ("torch", "cpu", "fp16", ["torch fp16 needs a CUDA device"]),
    ("torch", "cpu", "int8", ["torch runs fp32 or fp16"]),
    ("onnxruntime", "cpu", "fp16", ["onnxruntime runs fp32 or int8"]),
    ("onnxruntime", "cpu", "int8", ["needs calibration images", "--calib DIR"]),
    ("tensorflow", "cpu", "fp32", ["unknown backend 'tensorflow'", "choose from auto, torch",
                                   "available here: torch, onnxruntime"]),
    ("torch", "cpu", "fp8", ["unknown precision 'fp8'"]),
])
def test_unavailable_choices_say_what_is_missing(hybridnets_module, name, device, precision, expected):
    with pytest.raises(BackendUnavailable) as info:
        create_backend(name, hybridnets_module, HYBRIDNETS, device=device, precision=precision)
    for text in expected:
        assert text in str(info.value)


def test_cuda_graphs_need_cuda(hybridnets_module):
    with pytest.raises(BackendUnavailable, match="CUDA graphs need a CUDA device"):
        create_backend("torch", hybridnets_module, HYBRIDNETS, cuda_graph=True)


def test_with_cuda_present_only_tensorrt_is_missing(hybridnets_module, monkeypatch):
    # Fakes CUDA, which cannot exist here, to check the message a CUDA machine without
    # TensorRT / torch2trt gets.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BackendUnavailable) as info:
        create_backend("tensorrt", hybridnets_module, HYBRIDNETS, device="cuda")
    assert "missing Python module 'tensorrt'" in str(info.value)
    assert "CUDA device" not in str(info.value)
    assert "available on cuda: torch" in str(info.value)
    with pytest.raises(BackendUnavailable, match="missing Python module 'torch2trt'"):
        create_backend("torch2trt", hybridnets_module, HYBRIDNETS, device="cuda")


def test_old_tensorrt_is_refused(monkeypatch):
    # A stub module standing in for TensorRT 8.2, which cannot be installed here.
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.2.5"))
    from hybridnets_ros.backends.tensorrt_backend import import_tensorrt
    with pytest.raises(BackendUnavailable, match="TensorRT 8.2.5 is too old: need 8.5"):
        import_tensorrt()


def test_unknown_options_are_rejected(hybridnets_module):
    with pytest.raises(TypeError, match="unknown backend option.*fp16_mode"):
        create_backend("torch", hybridnets_module, HYBRIDNETS, fp16_mode=True)


# --- engine cache ----------------------------------------------------------------------
# The files cached here are fake engines (a few bytes): TensorRT cannot run on this machine,
# and the cache logic only sees bytes and keys.

KEY = EngineKey("tensorrt", (384, 640), "fp16", "ab" * 32, runtime="tensorrt 10.3.0",
                gpu="NVIDIA Orin (sm_87)")


def fake_build(content=b"engine-bytes", calls=None):
    def build(path):
        if calls is not None:
            calls.append(path)
        path.write_bytes(content)
    return build


def test_key_covers_gpu_runtime_shape_precision_weights_and_calibration():
    variants = [KEY, EngineKey(**{**KEY.__dict__, "gpu": "NVIDIA GeForce RTX 4090 (sm_89)"}),
                EngineKey(**{**KEY.__dict__, "runtime": "tensorrt 8.6.2"}),
                EngineKey(**{**KEY.__dict__, "input_hw": (512, 640)}),
                EngineKey(**{**KEY.__dict__, "precision": "int8"}),
                EngineKey(**{**KEY.__dict__, "weights": "cd" * 32}),
                EngineKey(**{**KEY.__dict__, "calibration": "ef" * 32})]
    names = {k.filename(".engine") for k in variants}
    assert len(names) == len(variants)
    assert KEY.filename(".engine").startswith("tensorrt-fp16-384x640-")


def test_built_once_then_loaded(tmp_path):
    cache, calls = EngineCache(tmp_path), []
    first = cache.get_or_build(KEY, ".engine", fake_build(calls=calls), "engine")
    second = cache.get_or_build(KEY, ".engine", fake_build(calls=calls), "engine")
    assert first == second and len(calls) == 1 and first.read_bytes() == b"engine-bytes"
    meta = json.loads(cache.sidecar(first).read_text())
    assert meta["key"]["gpu"] == "NVIDIA Orin (sm_87)" and meta["key"]["input_hw"] == [384, 640]
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, first.name + ".json"]


def test_stale_or_foreign_files_are_rebuilt_not_loaded(tmp_path, caplog):
    cache = EngineCache(tmp_path)
    path = cache.get_or_build(KEY, ".engine", fake_build(), "engine")
    sidecar = cache.sidecar(path)

    # Foreign: an engine built for another GPU copied in under this key's name.
    meta = json.loads(sidecar.read_text())
    meta["key"]["gpu"] = "NVIDIA GeForce RTX 3060 (sm_86)"
    sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(KEY, ".engine") is None
    assert "gpu 'NVIDIA GeForce RTX 3060 (sm_86)' != 'NVIDIA Orin (sm_87)'" in caplog.text
    calls = []
    cache.get_or_build(KEY, ".engine", fake_build(b"rebuilt", calls), "engine")
    assert len(calls) == 1 and path.read_bytes() == b"rebuilt"

    # Stale: the file changed after its sidecar was written (truncated, overwritten).
    path.write_bytes(b"rebuil")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert cache.lookup(KEY, ".engine") is None
    assert "sha256 differs" in caplog.text

    # No sidecar at all: not built by this cache.
    sidecar.unlink()
    assert cache.lookup(KEY, ".engine") is None
    sidecar.write_text("{not json")
    assert cache.lookup(KEY, ".engine") is None
    cache.get_or_build(KEY, ".engine", fake_build(), "engine")
    assert cache.lookup(KEY, ".engine") == path


def test_failed_build_leaves_nothing(tmp_path):
    cache = EngineCache(tmp_path)

    def broken(path):
        path.write_bytes(b"half an eng")
        raise RuntimeError("builder crashed")

    with pytest.raises(RuntimeError, match="builder crashed"):
        cache.get_or_build(KEY, ".engine", broken, "engine")
    with pytest.raises(RuntimeError, match="produced no file"):
        cache.get_or_build(KEY, ".engine", lambda path: path.unlink(), "engine")
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_interrupted_builds_are_removed_but_not_a_build_under_way(tmp_path, caplog):
    """What a killed build leaves (issue 31: empty ``*.onnx.*.part`` files) goes when the
    cache is opened, except the files of a build still under way (its key is locked: here
    by another thread; another process's lock counts the same, flock is per open file)."""
    other = EngineKey(**{**KEY.__dict__, "input_hw": (512, 640)})
    writing, finish = threading.Event(), threading.Event()

    def slow_build(path):
        path.write_bytes(b"half an engine")
        writing.set()
        assert finish.wait(60)
        path.write_bytes(b"a whole engine")

    builder = threading.Thread(target=EngineCache(tmp_path).get_or_build,
                               args=(other, ".engine", slow_build, "engine"))
    builder.start()
    try:
        assert writing.wait(60)
        final = KEY.filename(".onnx")
        leftovers = [f"{final}.k3j_x9.part", f"{final}.k3j_x9.part.json",
                     f"{final}.q1w2e3.part.prep.onnx", f"{final}.lock"]
        for name in leftovers:
            (tmp_path / name).write_bytes(b"")
        with caplog.at_level(logging.INFO):
            EngineCache(tmp_path)  # opened by a configure, another command, a fleet worker
        names = {p.name for p in tmp_path.iterdir()}
        assert not names & set(leftovers), sorted(names)
        assert f"removed what an interrupted build left in {tmp_path}: " in caplog.text
        under_way = [n for n in names if n.startswith(other.filename(".engine"))]
        assert len(under_way) == 2 and any(n.endswith(".part") for n in under_way), under_way
    finally:
        finish.set()
        builder.join(60)
    path = EngineCache(tmp_path).lookup(other, ".engine")
    assert path is not None and path.read_bytes() == b"a whole engine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".json"]


def test_exports_from_two_threads_at_once_both_succeed(tmp_path, caplog):
    """torch.onnx.export is not re-entrant (issue 31: "GLOBALS.in_onnx_export must be
    False"): two threads export two sizes at once, a third asks for the first one's file
    and waits for it instead of exporting it again."""
    net, cache = TinyNet(depth=40).eval(), EngineCache(tmp_path)
    sizes = [(128, 128), (128, 256), (128, 128)]
    start, paths, errors = threading.Barrier(len(sizes)), {}, []

    def export(index, hw):
        start.wait()
        try:
            paths[index] = cached_onnx(net, HYBRIDNETS, hw, cache=cache)
        except Exception as exc:  # noqa: BLE001  (what the test reports)
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=export, args=item) for item in enumerate(sizes)]
    with caplog.at_level(logging.INFO):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    assert errors == []
    assert paths[0] == paths[2] != paths[1]
    assert caplog.text.count("building hybridnets ONNX export") == 2, caplog.text
    inputs = np.random.default_rng(0).standard_normal((1, 3, 128, 256), dtype=np.float32)
    backend = OnnxRuntimeBackend(registry.BackendSpec(net, HYBRIDNETS, cache=cache))
    with torch.inference_mode():
        reference = [t.numpy() for t in net(torch.from_numpy(inputs))]
    for ours, theirs in zip(outputs_of(backend, inputs), reference):
        assert rel_l2(ours, theirs) < 1e-5


def test_weights_digest_follows_values_not_order(hybridnets_module):
    state = hybridnets_module.state_dict()
    digest = weights_digest(hybridnets_module)
    assert weights_digest(dict(reversed(list(state.items())))) == digest
    changed = dict(state)
    changed["segmentation_head.0.bias"] = state["segmentation_head.0.bias"] + 1e-6
    assert weights_digest(changed) != digest


# --- INT8 plumbing ---------------------------------------------------------------------
# Quantising the full network takes ~30 s (ONNX Runtime's quantiser), so the benchmark
# covers it; here the same code runs on a two-layer network.

def test_calibration_frames_fit_the_engine_shape(tmp_path, sample_images):
    from hybridnets_ros.backends.quantize import CalibrationError, calibration_frames
    folder = tmp_path / "calib"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.jpg"), cv2.imread(str(sample_images[0])))
    cv2.imwrite(str(folder / "small.png"), cv2.resize(cv2.imread(str(sample_images[1])), (640, 360)))
    (folder / "broken.jpg").write_bytes(b"not an image")
    frames = calibration_frames(folder, (720, 1280), Preprocessor(640))
    assert len(frames) == 2 and all(f.shape == (1, 3, 384, 640) for f in frames)
    assert frames[0] is not frames[1] and not np.shares_memory(frames[0], frames[1])
    with pytest.raises(CalibrationError, match="no calibration images"):
        calibration_frames(tmp_path / "nothing", (720, 1280), Preprocessor(640))


def test_assumed_camera_gives_the_engine_shape():
    from hybridnets_ros.backends.quantize import assumed_camera
    input_hw = Preprocessor(640).input_hw
    assert assumed_camera((384, 640), input_hw) == (720, 1280)
    assert assumed_camera((512, 640), input_hw) == (512, 640)  # e.g. a 4:3 camera


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    """A conv-SiLU-conv network's ONNX and four calibration inputs."""
    path = small_network_onnx(tmp_path_factory.mktemp("small") / "small.onnx")
    rng = np.random.default_rng(0)
    return path, [rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in range(4)]


def _run_onnx(path, frame, optimise=True):
    import onnxruntime as ort
    options = ort.SessionOptions()
    if not optimise:  # Q/DQ nodes run as written, in float: quantisation without int8 kernels
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(
        None, {"image": frame})[0]


@pytest.mark.parametrize("reduce_range", [None, True])  # None: this CPU's choice
def test_static_qdq_quantisation_of_a_small_network(small_onnx, tmp_path, reduce_range):
    """Two bounds that hold on every CPU. The quantised graph simulated in float (Q/DQ run
    literally) stays within what its calibrated steps allow of fp32; ONNX Runtime's int8
    kernels then reproduce that simulation to within one step of each quantised tensor,
    propagated to the output. The kernels differ per instruction set (VNNI, AVX2's
    int16 pair sums), the simulation does not. (Full-range weights on an AVX2-only CPU
    break the second bound: the pair sums saturate; hence 7-bit weights there.)"""
    import onnx
    from onnx import numpy_helper

    from hybridnets_ros.backends.quantize import quantize_onnx

    fp32, frames = small_onnx
    int8 = quantize_onnx(fp32, tmp_path / "small_int8.onnx", frames, reduce_range=reduce_range)
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in graph.node}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_int8.onnx"]
    const = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in graph.initializer}
    # 7 bits: [-64, 63], so a pair of products stays within int16 (255 x 64 x 2 < 32767)
    if reduce_range:
        assert np.abs(const["2.weight_quantized"]).max() <= 64

    reference, simulated, kernels = (_run_onnx(fp32, frames[0]), _run_onnx(int8, frames[0], False),
                                     _run_onnx(int8, frames[0]))
    assert rel_l2(simulated, reference) < 0.05
    # One step off in the first conv's output moves x * sigmoid(x) by at most 1.1 steps; one
    # step off in SiLU's output moves the 1x1 conv by the sum of its |weights| times a step.
    step = lambda name: const[f"{name}_scale"].max()
    silu = 1.1 * step("/0/Conv_output_0") + step("/1/Mul_output_0")
    weights = np.abs(const["2.weight_quantized"] * const["2.weight_scale"][:, None, None, None])
    bound = weights.sum(axis=(1, 2, 3)) * silu + step("out")
    assert np.all(np.abs(kernels - simulated).max(axis=(0, 2, 3)) <= bound)


def test_quantisation_uses_7_bit_weights_without_an_int8_dot_product(monkeypatch, small_onnx,
                                                                      tmp_path):
    import onnx
    from onnx import numpy_helper

    from hybridnets_ros.backends import cpu, quantize
    fp32, frames = small_onnx
    for flags, limit in (({"avx2", "fma"}, 64), ({"avx2", "avx512_vnni"}, 127)):
        monkeypatch.setattr(cpu, "cpu_flags", lambda flags=flags: flags)
        monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
        out = quantize.quantize_onnx(fp32, tmp_path / f"{limit}.onnx", frames)
        weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
        assert limit / 2 < np.abs(weights["0.weight_quantized"].astype(int)).max() <= limit


# --- where the hardware exists -----------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("precision, cuda_graph", [("fp32", False), ("fp16", False), ("fp16", True)])
def test_torch_on_cuda(golden_model, golden_case, precision, cuda_graph):
    backend = create_backend("torch", golden_model, HYBRIDNETS, device="cuda", precision=precision,
                             cuda_graph=cuda_graph)
    got = outputs_of(backend, torch.from_numpy(golden_case["input_tensor"]).cuda())
    limit = 1e-4 if precision == "fp32" else 5e-2
    for name, value in zip(OUTPUTS, got):
        assert rel_l2(value, golden_case[name]) < limit, name


@requires_tensorrt
@pytest.mark.parametrize("precision, limit", [("fp32", 1e-3), ("fp16", 5e-2)])
def test_tensorrt_engine_matches_golden(golden_model, golden_case, precision, limit):
    backend = create_backend("tensorrt", golden_model, HYBRIDNETS, device="cuda", precision=precision)
    got = outputs_of(backend, golden_case["input_tensor"])
    for name, value in zip(OUTPUTS, got):
        assert rel_l2(value, golden_case[name]) < limit, name
    again = create_backend("tensorrt", golden_model, HYBRIDNETS, device="cuda", precision=precision)
    assert again.engine_path((384, 640)) == backend.engine_path((384, 640))  # from the cache


@requires_torch2trt
def test_torch2trt_engine_matches_golden(golden_model, golden_case):
    backend = create_backend("torch2trt", golden_model, HYBRIDNETS, device="cuda", precision="fp16")
    got = outputs_of(backend, golden_case["input_tensor"])
    for name, value in zip(OUTPUTS, got):
        assert rel_l2(value, golden_case[name]) < 5e-2, name


def test_an_unwritable_cache_folder_falls_back_to_a_temporary_one(tmp_path, monkeypatch, caplog):
    """A read-only HOME (a vehicle's image) must not stop engines from being built: the
    cache moves to the temporary folder, said once."""
    from hybridnets_ros.backends import engine_cache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.delenv("HYBRIDNETS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # mkdir under a file fails, even as root
    monkeypatch.setattr(engine_cache, "_fallback_said", False)
    with caplog.at_level(logging.WARNING, "hybridnets_ros"):
        first, second = engine_cache.EngineCache(), engine_cache.EngineCache()
    assert first.root == second.root and first.root.parts[-1] == "engines"
    assert str(first.root).startswith(tempfile.gettempdir())
    assert caplog.text.count("using " + str(first.root)) == 1 and str(blocker) in caplog.text
