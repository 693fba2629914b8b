"""bench --layers: the engines' per-layer profiles, on a small ONNX graph built here."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hybridnets_ros.tools.layer_profile import format_layers, profile_layers


@pytest.fixture(scope="module")
def small_graph(tmp_path_factory):
    """conv 3x3 (4 -> 16, 40x48) -> ReLU -> depthwise 3x3 -> max-pool 5x5 (stride 1)."""
    rng = np.random.default_rng(0)
    dense = numpy_helper.from_array(rng.standard_normal((16, 4, 3, 3)).astype(np.float32), "w1")
    depthwise = numpy_helper.from_array(rng.standard_normal((16, 1, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="dense", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"], name="relu"),
             helper.make_node("Conv", ["b", "w2"], ["c"], name="depthwise", group=16,
                              pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["y"], name="pool", kernel_shape=[5, 5],
                              pads=[2, 2, 2, 2])]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4, 40, 48])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 16, 40, 48])], [dense, depthwise])
    path = tmp_path_factory.mktemp("layers") / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_profile_counts_the_convolution_flops(small_graph, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    rows = profile_layers(backend, small_graph, threads=1, runs=2)
    by_type = {r["type"]: r for r in rows}
    dense_gflop = 2 * 16 * 40 * 48 * 4 * 9 / 1e9
    depthwise_gflop = 2 * 16 * 40 * 48 * 9 / 1e9
    assert by_type["depthwise convolution"]["gflop"] == pytest.approx(depthwise_gflop, rel=1e-3)
    # An engine may fuse the ReLU into the convolution; the FLOPs stay the convolution's.
    assert by_type["convolution"]["gflop"] == pytest.approx(dense_gflop, rel=1e-3)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    assert [r["ms"] for r in rows] == sorted((r["ms"] for r in rows), reverse=True)
    assert all(r["gflops"] is None or r["gflops"] > 0 for r in rows)
    text = format_layers(backend, rows, ceiling_gflops=100.0)
    assert text.splitlines()[0].startswith(f"{backend}: ") and "convolution" in text
