"""Several frames through one backend call (Pipeline.run_batch) give what one at a time gives."""
import pytest

from conftest import match_detections
from hybridnets_ros.backends import create_backend
from hybridnets_ros.core.registry import adapter
from hybridnets_ros.backends.engine_cache import EngineKey
from hybridnets_ros.core.synthetic import SyntheticRoad, default_camera
from hybridnets_ros.pipeline.pipeline import Pipeline

HYBRIDNETS = adapter("hybridnets")

SIZE = 256  # a small network input keeps the traces and exports quick


@pytest.fixture(scope="module")
def frames():
    """Three different 512x288 views (-> 256x256 network input) and one 512x192 view (-> a
    128x256 input, so it runs in a group of its own)."""
    images = []
    for yaw in (0.0, 0.6, -0.6):
        scene = SyntheticRoad(default_camera(512, 288, (0, 0, 1.5, 0, 0.05, yaw)), seed=1)
        images.append(scene.render(0.3)[0])
    images.append(SyntheticRoad(default_camera(512, 192)).render()[0])
    return images


@pytest.mark.slow  # traces or exports the network for batch sizes 1 and 3
@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_batched_equals_one_at_a_time(hybridnets_module, frames, backend):
    pipeline = Pipeline(create_backend(backend, hybridnets_module, HYBRIDNETS), input_size=SIZE)
    assert pipeline.backend.batching
    pipeline.batch_size = 3  # three cameras
    if backend != "torch":  # the grouping by input size is the backend's business: once
        frames = frames[:3]
    single = [pipeline(bgr) for bgr in frames]
    single = [(r.detections, r.seg_mask.copy()) for r in single]
    batched = pipeline.run_batch(frames)
    assert [r.batch_size for r in batched] == [3, 3, 3, 1][:len(frames)]
    for (detections, mask), result in zip(single, batched):
        assert result.seg_mask.shape == mask.shape
        assert (result.seg_mask == mask).mean() > 0.999
        d = result.detections
        match_detections(d.boxes, d.scores, d.classes, detections.boxes, detections.scores,
                         detections.classes, iou_min=0.98, score_tol=1e-3)
    # Again: the batch buffer and the batch-3 engine are reused, results unchanged.
    again = pipeline.run_batch(frames[:3])
    assert all((a.seg_mask == b.seg_mask).all() for a, b in zip(again, batched))
    # Fewer frames than the batch size run one at a time on the CPU (no batch-2 engine).
    assert [r.batch_size for r in pipeline.run_batch(frames[:2])] == [1, 1]


def test_batch_is_part_of_the_engine_key_but_batch_1_keys_are_unchanged():
    one = EngineKey("onnx", (384, 640), "fp32", "w")
    assert "batch" not in one.as_json()  # caches built before batches existed stay valid
    three = EngineKey("onnx", (384, 640), "fp32", "w", batch=3)
    assert three.digest() != one.digest() and "-b3-" in three.filename(".onnx")
