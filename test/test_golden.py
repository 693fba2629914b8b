"""The whole path against the original implementation's outputs (shared/golden)."""
import pytest
import numpy as np
import torch

from conftest import match_detections, rel_l2
from hybridnets_ros.core.models.hybridnets.anchors import generate_anchors
from hybridnets_ros.core.models.hybridnets.adapter import RawOutputs
from hybridnets_ros.core.models.hybridnets.spec import BDD100K


def test_state_dict_layout_matches_released_checkpoint(golden_model):
    from conftest import GOLDEN
    expected = [line.split("\t") for line in (GOLDEN / "state_dict_keys.txt").read_text().splitlines()]
    ours = {k: str(tuple(v.shape)) for k, v in golden_model.state_dict().items()}
    assert ours == dict(expected)  # names and shapes; order does not matter for loading


def test_preprocessing_is_bit_exact(golden_pipeline, golden_case):
    tensor, letterbox = golden_pipeline.preprocessor(golden_case["input_bgr"])
    assert letterbox.input_hw == (384, 640) and (letterbox.pad_w, letterbox.pad_h) == (0.0, 12.0)
    np.testing.assert_array_equal(tensor, golden_case["input_tensor"])


def test_anchors_are_exact(golden_case):
    np.testing.assert_array_equal(generate_anchors((384, 640), BDD100K), golden_case["anchors"][0])


def test_raw_outputs(golden_model, golden_case):
    with torch.inference_mode():
        regression, classification, segmentation = golden_model(
            torch.from_numpy(golden_case["input_tensor"]))
    assert rel_l2(regression, golden_case["regression"]) < 1e-4
    assert rel_l2(classification, golden_case["classification"]) < 1e-4
    assert rel_l2(segmentation, golden_case["segmentation"]) < 1e-4


def test_postprocessing_of_reference_outputs_is_exact(golden_pipeline, golden_case):
    raw = RawOutputs(*(torch.from_numpy(golden_case[k])
                       for k in ("regression", "classification", "segmentation")))
    result = golden_pipeline.postprocess(raw, golden_pipeline.preprocessor.letterbox((720, 1280)))
    d = result.detections
    match_detections(d.boxes, d.scores, d.classes, golden_case["det_boxes_xyxy"],
                     golden_case["det_scores"], golden_case["det_classes"], iou_min=0.9999,
                     score_tol=1e-7)
    np.testing.assert_array_equal(result.seg_mask, golden_case["seg_mask"])


@pytest.mark.slow  # the golden case through every stage
def test_end_to_end(golden_pipeline, golden_case):
    result = golden_pipeline(golden_case["input_bgr"])
    d = result.detections
    assert len(d) == 83
    match_detections(d.boxes, d.scores, d.classes, golden_case["det_boxes_xyxy"],
                     golden_case["det_scores"], golden_case["det_classes"])
    assert np.all(np.diff(d.scores) <= 0), "detections must come in descending score order"
    assert d.boxes.dtype == np.float32 and d.scores.dtype == np.float32 and d.classes.dtype == np.int64
    assert result.seg_mask.shape == (720, 1280) and result.seg_mask.dtype == np.uint8
    assert (result.seg_mask == golden_case["seg_mask"]).mean() >= 0.999
    assert set(result.timings_ms) == {"preprocess", "network", "postprocess"}
