"""Shared fixtures. Reference data lives in ../shared beside the repository (also in CI)."""
from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from collect_guard import pytest_pycollect_makemodule  # noqa: F401  (a hook: pytest finds it here)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("HYBRIDNETS_SHARED", REPO.parent / "shared"))
GOLDEN = SHARED / "golden"
DEMO_IMAGES = SHARED / "data" / "demo_images"
ROS_TOOLS = SHARED / "ros_tools"

# `make test` runs the files in two processes (pytest-xdist): each takes its share of the
# cores, so that their thread pools do not spin against each other.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))

# The real launch tools' pytest plugins (launch_testing, launch_pytest) import `launch`, whose
# logging module makes every logger created afterwards a LaunchLogger that does not propagate
# to the root logger, so caplog would see none of the package's records. Loggers created from
# here on (the package's, at its import) are plain ones again.
logging.setLoggerClass(logging.Logger)

import ros_graph  # noqa: E402,F401  (each test process's DDS domain, before any graph starts)


def _need(path: Path) -> Path:
    if not path.exists():
        message = f"reference data not found: {path} (set HYBRIDNETS_SHARED)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- Seeded random weights: everything that is not a comparison with the reference. ---

@functools.cache
def random_module(model: str) -> torch.nn.Module:
    """Network ``model``'s module with the seeded random weights it has without a checkpoint
    (its settings at their defaults), built once per session. The factory keeps them in the
    session's cache (``session_cache``), where the nodes and commands the tests start find
    them instead of setting them up again (HybridNets: seconds of calibration each)."""
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.pipeline.factory import load_module
    return load_module(NodeConfig(model=model, allow_random_weights=True))[0]


@pytest.fixture(scope="session")
def hybridnets_module(session_cache) -> torch.nn.Module:
    """HybridNets with seeded random weights: the golden data and the anchors are its."""
    return random_module("hybridnets")


@pytest.fixture(scope="session")
def random_weights(hybridnets_module, tmp_path_factory) -> Path:
    """``hybridnets_module`` saved as a checkpoint file in the released key layout."""
    path = tmp_path_factory.mktemp("weights") / "hybridnets_random.pth"
    torch.save(hybridnets_module.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def random_pipeline(hybridnets_module):
    from hybridnets_ros.backends import create_backend
    from hybridnets_ros.core.registry import adapter
    from hybridnets_ros.pipeline.pipeline import Pipeline
    return Pipeline(create_backend("torch", hybridnets_module, adapter("hybridnets")))


@pytest.fixture
def processor(random_pipeline):
    """A frame processor on the session's random pipeline, calibrated as the synthetic
    road's camera (the frames of ``core.synthetic``)."""
    from hybridnets_ros.core.synthetic import default_camera
    from hybridnets_ros.pipeline.config import NodeConfig
    from hybridnets_ros.ros.camera_info import camera_info_from_model
    from hybridnets_ros.ros.frame import FrameProcessor
    processor = FrameProcessor(random_pipeline, NodeConfig())
    processor.camera_info = camera_info_from_model(default_camera(), "camera_optical_frame")
    return processor


@pytest.fixture(scope="session")
def random_onnx(hybridnets_module, session_cache) -> Path:
    """``hybridnets_module``'s ONNX export for a 1280x720 camera's 384x640 input (exported once)."""
    from hybridnets_ros.backends.onnx_export import cached_onnx
    from hybridnets_ros.core.registry import adapter
    return cached_onnx(hybridnets_module, adapter("hybridnets"), (384, 640))


@pytest.fixture(scope="session")
def sample_images(tmp_path_factory) -> list[Path]:
    """Six 1280x720 JPEG frames of the synthetic road (1.jpg ... 6.jpg), like the demo images."""
    import cv2

    from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
    folder = tmp_path_factory.mktemp("sample_images")
    scene = SyntheticRoad(default_camera())
    paths = [folder / f"{i + 1}.jpg" for i in range(6)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), scene.render(i / 5)[0])
    return paths


# --- Reference data (../shared): only the golden-equivalence tests use these. ---

@pytest.fixture(scope="session")
def golden_weights() -> Path:
    return _need(GOLDEN / "hybridnets_random_seed0.pth")


@pytest.fixture(scope="session")
def golden_case() -> dict[str, np.ndarray]:
    return load_npz(GOLDEN / "case_shared.npz")


@pytest.fixture(scope="session")
def demo_images() -> list[Path]:
    return sorted(_need(DEMO_IMAGES).glob("*.jpg"))


@pytest.fixture(scope="session")
def golden_model(golden_weights):
    from hybridnets_ros.core.models.hybridnets.weights import load_module
    return load_module(golden_weights)


@pytest.fixture(scope="session")
def golden_pipeline(golden_model):
    from hybridnets_ros.backends import create_backend
    from hybridnets_ros.core.registry import adapter
    from hybridnets_ros.pipeline.pipeline import Pipeline
    return Pipeline(create_backend("torch", golden_model, adapter("hybridnets")))


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory) -> Path:
    """Everything the tests cache (ONNX exports, INT8 models, engines) goes to one folder per
    session, shared by the tests and the processes they start, never the user's cache. The
    test processes of one run share it (the package's cache is safe for that: each export or
    engine is written whole under a lock, as for two nodes on one machine), so that a model
    is exported once per run; a test that must see a build gets a folder of its own."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        cache = tmp_path_factory.getbasetemp().parent / "hybridnets-cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("hybridnets-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYBRIDNETS_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="session")
def golden_onnx(golden_model, session_cache) -> Path:
    """The golden model's ONNX export for the golden case's 384x640 input (exported once)."""
    from hybridnets_ros.backends.onnx_export import cached_onnx
    from hybridnets_ros.core.registry import adapter
    return cached_onnx(golden_model, adapter("hybridnets"), (384, 640))


def export_and_run_onnx(model: torch.nn.Module, x: np.ndarray, path: Path,
                        output_names: tuple[str, ...]) -> tuple:
    """``model``'s static-shape opset-17 ONNX export for input ``x`` at ``path``, and its
    ONNX Runtime outputs for ``x``: (the loaded ModelProto, [outputs])."""
    import warnings

    import onnx
    import onnxruntime as ort

    # The tracer warns that feature-map sizes become constants: intended (static shape).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(x),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"],
                          output_names=list(output_names))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(str(path)), session.run(list(output_names), {"image": x})


def assert_static_onnx(proto, input_shape: tuple[int, ...], output_names) -> None:
    """An export as the golden tests expect it: valid, opset 17, the static input shape,
    the outputs by name."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == 17
    (image,) = proto.graph.input
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == list(input_shape)
    assert [output.name for output in proto.graph.output] == list(output_names)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a reference .npz file (skips, or fails in CI, when it is missing)."""
    with np.load(_need(path)) as data:
        return {key: data[key] for key in data.files}


def read_bag(path, intact: bool = True) -> dict[str, list]:
    """{topic: [(bag timestamp, message)]} of a whole bag; ``intact``: it must read without
    damage."""
    from hybridnets_ros.tools.bags import BagReader

    out = {}
    with BagReader(path) as reader:
        for topic, _, timestamp, msg in reader.messages({t.name for t in reader.topics()}):
            out.setdefault(topic, []).append((timestamp, msg))
        assert not intact or reader.damage == []
    return out


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                   reason="needs a CUDA GPU (torch.cuda.is_available() is False)")


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def need_modules(*modules: str) -> None:
    """Skips the calling test module, or test, (fails it in CI) unless ``modules`` import:
    the real ROS tools (launch, launch_ros, launch_testing, ros2launch, bondpy, ...), which
    are not on the package index; `make test` installs them from ../shared/ros_tools, a ROS
    workspace has them from rosdep."""
    missing = [m for m in modules if not _has(m)]
    if missing:
        source = ROS_TOOLS if ROS_TOOLS.is_dir() else f"{ROS_TOOLS}, which is not there"
        message = (f"{', '.join(missing)} not installed: `make test` (scripts/bootstrap.sh "
                   f"--test) installs them from {source}")
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message, allow_module_level=True)


requires_tensorrt = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has("tensorrt")),
    reason="needs a CUDA GPU and TensorRT's Python bindings")
requires_torch2trt = pytest.mark.skipif(
    not (torch.cuda.is_available() and _has("tensorrt") and _has("torch2trt")),
    reason="needs a CUDA GPU, TensorRT and torch2trt")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch, session_cache, hybridnets_module) -> Path:
    """A weights cache without checkpoints, so no downloaded one leaks into a test; it shares
    the session's random weights (keyed by the code, no checkpoint)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "random").symlink_to(session_cache / "random")
    monkeypatch.setenv("HYBRIDNETS_CACHE", str(cache))
    return cache


def small_network_onnx(path: Path, size: int = 32) -> Path:
    """A seeded two-conv network exported to ONNX at ``path`` (input "image" [1,3,size,size],
    output "out"): quick quantisation and parser checks."""
    import warnings
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.SiLU(),
                              torch.nn.Conv2d(16, 4, 1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own (see export.py)
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["out"])
    return path


class TinyNet(torch.nn.Module):
    """HybridNets' three outputs ([1,N,4], [1,N,1], [1,3,H,W]) from one convolution: exports,
    compiles and runs in a moment, for what only sees a network through its ONNX file or
    its engine (run it with ``adapter("hybridnets")``). ``depth`` adds residual 1x1
    convolutions: an export that takes a second or so (0.02 s without), long enough for
    another thread to meet it."""

    def __init__(self, seed: int = 0, depth: int = 0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.blocks = torch.nn.ModuleList(torch.nn.Conv2d(4, 4, 1) for _ in range(depth))
        generator = torch.Generator().manual_seed(seed)  # not the global RNG other tests use
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))

    def forward(self, x):
        y = self.conv(x)
        for block in self.blocks:
            y = y + 0.1 * torch.tanh(block(y))
        return (y.flatten(2).transpose(1, 2), y[:, :1].flatten(2).transpose(1, 2).sigmoid(),
                y[:, 1:])


def rel_l2(actual, expected) -> float:
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


def match_detections(boxes, scores, classes, ref_boxes, ref_scores, ref_classes,
                     iou_min: float = 0.99, score_tol: float = 1e-4) -> None:
    """Every reference box matched one-to-one by a same-class box at IoU >= iou_min with a
    score within score_tol, and no extra boxes."""
    assert len(boxes) == len(ref_boxes), f"{len(boxes)} detections, reference has {len(ref_boxes)}"
    if not len(ref_boxes):
        return
    from hybridnets_ros.core.nms import box_iou
    iou = box_iou(torch.as_tensor(ref_boxes, dtype=torch.float64),
                  torch.as_tensor(boxes, dtype=torch.float64)).numpy()
    iou[np.asarray(ref_classes)[:, None] != np.asarray(classes)[None, :]] = 0
    used = set()
    for i in np.argsort(-np.asarray(ref_scores)):
        candidates = [j for j in np.argsort(-iou[i]) if j not in used and iou[i, j] >= iou_min
                      and abs(scores[j] - ref_scores[i]) <= score_tol]
        assert candidates, (f"reference box {i} {ref_boxes[i]} (score {ref_scores[i]:.5f}) has no "
                            f"match; best IoU {iou[i].max():.4f}")
        used.add(candidates[0])


def check_humble_metadata(bag, expected: dict[str, tuple[int, int]]) -> None:
    """``bag``'s metadata is what Humble's rosbag2 reads (version 8, offered_qos_profiles a
    YAML string of rmw enum values) and its MCAP file what rosbag2 writes; ``expected``:
    topic -> (durability, reliability) as rmw values (1 transient local / reliable,
    2 volatile / best effort)."""
    import yaml
    from mcap.reader import make_reader
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 8
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"]
              for t in info["topics_with_message_count"]}
    assert set(expected) <= set(topics)
    for name, (durability, reliability) in expected.items():
        qos_text = topics[name]["offered_qos_profiles"]
        assert isinstance(qos_text, str), "Humble parses this field as a string"
        (profile,) = yaml.safe_load(qos_text)
        assert (profile["durability"], profile["reliability"]) == (durability, reliability), name
        assert topics[name]["type_description_hash"].startswith("RIHS01_")
    for path in bag.glob("*.mcap"):
        with open(path, "rb") as stream:
            summary = make_reader(stream).get_summary()
        for channel in summary.channels.values():
            assert channel.metadata["topic_type_hash"] == topics[channel.topic]["type_description_hash"]
            assert channel.metadata["offered_qos_profiles"] == topics[channel.topic]["offered_qos_profiles"]
        for schema in summary.schemas.values():
            text = schema.data.decode()
            headers = [line for line in text.splitlines() if line.startswith("MSG: ")]
            assert headers, schema.name  # every output type has dependencies
            assert all(line.count("/") == 2 and "/msg/" in line for line in headers), headers
            assert text.count("\n" + "=" * 80 + "\nMSG: ") == len(headers)
