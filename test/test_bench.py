"""`hybridnets bench`: runs the real pipeline, prints the table, writes the JSON schema."""
import json

import numpy as np
import pytest

from hybridnets_ros.tools.bench import Variant, fidelity, match_count
from hybridnets_ros.cli import main
from hybridnets_ros.pipeline.pipeline import Result
from hybridnets_ros.core.postprocess import Detections

STAGES = ["image conversion", "pre-processing", "network", "post-processing",
          "3D and tracks", "bird's-eye grids", "message build"]


@pytest.mark.slow  # a full bench run
def test_bench_writes_the_json_schema(tmp_path, random_weights, random_onnx, capsys):
    out = tmp_path / "bench.json"
    pytest.importorskip("openvino", reason="auto's interleaved measurement needs two engines")
    assert main(["bench", "--frames", "2", "--backend", "onnxruntime,openvino", "--weights",
                 str(random_weights), "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    machine = doc["machine"]
    assert machine["cpu"] and machine["threads"] >= 1 and "torch" in machine["versions"]
    assert "onnxruntime" in machine["versions"]
    record = doc["backends"]["onnxruntime:fp32"]
    assert list(record["stages"]) == STAGES
    for stage in STAGES:  # all measured: ROS 2 message types are in the project's venv
        s = record["stages"][stage]
        assert 0 < s["median_ms"] <= s["p95_ms"]
    assert record["network_ms"] == record["stages"]["network"]["median_ms"]
    assert record["e2e_ms"] >= record["network_ms"]
    assert record["fps"] == pytest.approx(1000 / record["e2e_ms"], rel=1e-2)
    assert record["fidelity"]["mask_agreement"] == 1.0  # its own reference
    # HybridNets at 384x640: 17.0 GFLOP (issue 25's count), run at a share of the ceiling
    assert record["input_hw"] == [384, 640] and record["gflop_per_frame"] == pytest.approx(17.0, rel=0.03)
    assert doc["gemm_ceiling_gflops"] > 0 and 0 < record["ceiling_fraction"] < 1.5
    assert record["gflops"] == pytest.approx(
        record["gflop_per_frame"] / record["network_ms"] * 1e3, rel=0.01)
    assert doc["gemm_ceiling_kernel"] in ("1024x1024 matrix product",
                                          "oneDNN 512-channel 1x1 convolution")
    # auto's measurement: the two engines' rows, recorded at this size
    auto = doc["auto"]
    assert auto["before"] in ("onnxruntime", "openvino")
    assert auto["network_ms"] == {name: doc["backends"][f"{name}:fp32"]["network_ms"]
                                  for name in ("onnxruntime", "openvino")}
    assert auto["fastest"] == min(auto["network_ms"], key=auto["network_ms"].get)
    recorded = json.loads(open(auto["recorded"]).read())
    assert any("size 640" in by_model.get("hybridnets", {}) for by_model in recorded.values())
    # the opt-in outputs' costs, apart from the overhead, on the faster exact engine
    opt_in = doc["opt_in"]
    assert opt_in["variant"] == f"{auto['fastest']}:fp32"
    assert set(opt_in["ms"]) == {"road geometry", "Nav2 semantic layer (confidence, points)"}
    printed = capsys.readouterr().out
    assert "opt-in outputs, built only for their subscribers" in printed
    assert "of the GEMM ceiling" in printed and "timed in turn" in printed
    assert "synthetic road frames" in printed and "pre-processing" in printed
    assert "frames per second" in printed and "message build" in printed


def test_unavailable_backend_is_reported(capsys):
    assert main(["bench", "--frames", "1", "--backend", "tensorrt:fp16"]) == 1
    printed = capsys.readouterr()
    assert "tensorrt:fp16: skipped" in printed.out and "missing" in printed.out
    assert "RANDOM" not in printed.err and "random (no checkpoint given" in printed.out


def test_bad_backend_name(capsys):
    assert main(["bench", "--backend", "tflite"]) == 2
    assert "unknown backend 'tflite'" in capsys.readouterr().err
    assert Variant.parse("torch-eager").options == (("optimize", False),)
    assert Variant.parse("onnxruntime:int8").label == "onnxruntime:int8"


def _result(boxes, classes, mask):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    detections = Detections(boxes, np.linspace(0.9, 0.5, len(boxes)).astype(np.float32),
                            np.asarray(classes, np.int64))
    return Result(detections, np.asarray(mask, np.uint8), None)


def test_fidelity_counts_one_to_one_matches():
    ref = _result([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0, 0, 1],
                  [[0, 1], [2, 2]])
    # one exact, one shifted (IoU 0.68), the class-1 box given class 0, and an extra box
    test = _result([[0, 0, 10, 10], [22, 20, 32, 30], [0, 0, 10, 10], [50, 50, 60, 60]],
                   [0, 0, 0, 0], [[0, 1], [2, 0]])
    assert match_count(ref.detections, test.detections) == 2
    f = fidelity({0: ref}, {0: test})
    assert f["detections_matched"] == 2 and f["detections_reference"] == 3
    assert f["detections"] == 4 and f["mask_agreement"] == 0.75


def test_flop_count_and_the_recorded_auto_choice(tmp_path, monkeypatch):
    import torch
    from hybridnets_ros.backends.registry import choose_auto
    from hybridnets_ros.tools.bench import network_gflop, record_auto_choice
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)  # 2 * 8*3*3*3 per output pixel
    assert network_gflop(conv, (10, 20)) == pytest.approx(2 * 8 * 27 * 200 / 1e9)
    monkeypatch.setenv("HYBRIDNETS_CACHE", str(tmp_path))
    doc = record_auto_choice("hyctas", {"torch": 400.0, "onnxruntime": 210.0, "openvino": 190.0},
                             None)
    assert doc["fastest"] == "openvino" and "timed in turn" in doc["summary"]
    assert choose_auto("cpu", "fp32", "hyctas")[0] == "openvino"
    doc = record_auto_choice("hyctas", {"torch": 400.0, "onnxruntime": 150.0, "openvino": 190.0},
                             None)
    assert doc["before"] == "openvino" and doc["fastest"] == "onnxruntime"
    assert "now onnxruntime" in doc["summary"]
    doc = record_auto_choice("hyctas", {"openvino": 100.0}, None)  # one engine: no comparison
    assert "not re-measured" in doc["summary"] and "fastest" not in doc
    assert choose_auto("cpu", "fp32", "hyctas")[0] == "onnxruntime"
