"""ONNX export: valid, static, and the same network as PyTorch (golden case, shared
post-processing); `hybridnets export` and its errors."""
import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from conftest import match_detections, rel_l2
from hybridnets_ros.core.models.hybridnets.anchors import generate_anchors
from hybridnets_ros.backends import create_backend
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.cli import main
from hybridnets_ros.backends.engine_cache import weights_digest
from hybridnets_ros.backends.onnx_export import OPSET, cached_onnx
from hybridnets_ros.pipeline.pipeline import Pipeline
from hybridnets_ros.core.models.hybridnets.spec import BDD100K

pytestmark = pytest.mark.slow  # ONNX exports of the whole network

OUTPUTS = ("regression", "classification", "segmentation")


def test_onnx_is_valid_static_and_described(random_onnx, hybridnets_module):
    proto = onnx.load(str(random_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17 and OPSET >= 17
    (image,) = proto.graph.input
    dims = [d.dim_value for d in image.type.tensor_type.shape.dim]
    assert image.name == "image" and dims == [1, 3, 384, 640]  # static: no symbolic dims
    assert [o.name for o in proto.graph.output] == list(OUTPUTS)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["input_hw"] == "384,640" and meta["class_names"] == "car"
    assert meta["weights_sha256"] == weights_digest(hybridnets_module)


def test_onnxruntime_matches_golden_outputs(golden_onnx, golden_case):
    session = ort.InferenceSession(str(golden_onnx), providers=["CPUExecutionProvider"])
    outputs = session.run(list(OUTPUTS), {"image": golden_case["input_tensor"]})
    for name, value in zip(OUTPUTS, outputs):
        assert rel_l2(value, golden_case[name]) < 1e-4, name


def test_same_results_through_shared_postprocessing(golden_onnx, golden_model, golden_case):
    pipeline = Pipeline(create_backend("onnxruntime", golden_model, adapter("hybridnets")))
    result = pipeline(golden_case["input_bgr"])
    d = result.detections
    match_detections(d.boxes, d.scores, d.classes, golden_case["det_boxes_xyxy"],
                     golden_case["det_scores"], golden_case["det_classes"])
    assert (result.seg_mask == golden_case["seg_mask"]).mean() >= 0.999


def test_export_is_cached_per_weights_and_shape(random_onnx, hybridnets_module):
    mtime = random_onnx.stat().st_mtime_ns
    assert cached_onnx(hybridnets_module, adapter("hybridnets"), (384, 640)) == random_onnx
    assert random_onnx.stat().st_mtime_ns == mtime  # loaded, not exported again


def test_export_command_writes_checked_onnx_and_anchors(tmp_path, random_weights, random_onnx,
                                                         capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--weights", str(random_weights), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "input 1x3x384x640 for a 1280x720 camera" in printed and "(ok)" in printed
    assert out.read_bytes() == random_onnx.read_bytes()
    np.testing.assert_array_equal(np.load(tmp_path / "model.anchors.npy"),
                                  generate_anchors((384, 640), BDD100K))


@pytest.mark.parametrize("args, message", [
    (["--format", "engine"], "missing a CUDA device"),
    (["--format", "engine"], "Python module 'tensorrt'"),
    (["--format", "torch2trt"], "Python module 'torch2trt'"),
    (["--fp16"], "--fp16 is for engines"),
    (["--int8"], "--int8 needs --calib"),
    (["--camera", "1280by720"], "must look like 1280x720"),
])
def test_export_errors_are_explained(args, message, random_weights, capsys):
    assert main(["export", "--weights", str(random_weights), *args]) == 2
    assert message in capsys.readouterr().err


def _onnxruntime_reorders(path, tmp_path) -> int:
    """NCHWc-to-NCHW reorders in ONNX Runtime's optimised graph of ``path``."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / f"optimized_{path.stem}.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath, load_external_data=False)
    return sum(n.op_type == "ReorderOutput" for n in optimized.graph.node)


def test_hydra_export_keeps_onnxruntime_blocked_layout(tmp_path, monkeypatch):
    """Hydra's export has an identity pool before each chained residual pooling, so that
    ONNX Runtime's NCHWc pass keeps the chains' sums blocked: far fewer layout reorders back
    to NCHW than the same graph without them (at 1280x720: 3 against 23); outputs as
    PyTorch's."""
    import torch
    from hybridnets_ros.backends.onnx_export import export_onnx
    from hybridnets_ros.core.models.hydra import network
    torch.manual_seed(0)
    model = network.HydraNet().eval()
    path = export_onnx(model, adapter("hydra"), tmp_path / "hydra.onnx", (96, 160))
    kernels = [{a.name: list(a.ints) for a in n.attribute}["kernel_shape"]
               for n in onnx.load(str(path)).graph.node if n.op_type == "MaxPool"]
    assert kernels.count([1, 1]) == 4 and kernels.count([5, 5]) == 16
    x = torch.randn(1, 3, 96, 160)
    with torch.inference_mode():
        reference = model(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for ours, theirs in zip(session.run(None, {"image": x.numpy()}), reference):
        assert rel_l2(ours, theirs.numpy()) < 1e-5
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("ONNX Runtime's NCHWc layout pass runs on x86-64 only")
    plain = network.ChainedResidualPooling.forward

    def without_identity(self, x):  # the chain as it was exported before
        with monkeypatch.context() as m:
            m.setattr(torch.onnx, "is_in_onnx_export", lambda: False)
            return plain(self, x)
    monkeypatch.setattr(network.ChainedResidualPooling, "forward", without_identity)
    before = export_onnx(model, adapter("hydra"), tmp_path / "hydra_plain.onnx", (96, 160))
    # at 96x160: 6 against 22
    assert 2 * _onnxruntime_reorders(path, tmp_path) < _onnxruntime_reorders(before, tmp_path)
