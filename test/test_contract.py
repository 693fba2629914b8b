"""The node's way to a backend, for everything the registry lists: every backend, every
model and every precision, through pipeline.factory.build_pipeline from a validated
NodeConfig (what the node's configure does). A signature or option that drifted between the
factory, the registry and a backend raises something other than BackendUnavailable and
fails here. Backends that need CUDA run against the TensorRT/torch2trt stand-ins
(test/standins): neither they nor CUDA can exist on this machine.
"""
from __future__ import annotations

import importlib

import numpy as np
import pytest

import standins
from conftest import random_module
from hybridnets_ros.backends import BackendUnavailable, registry
from hybridnets_ros.core.registry import ADAPTERS
from hybridnets_ros.pipeline.config import NodeConfig
from hybridnets_ros.pipeline.factory import build_pipeline
from hybridnets_ros.pipeline.pipeline import Pipeline

# Refusals that are a documented limit of a backend here rather than drift: the reason in
# the message (a CUDA-only precision on the CPU, INT8 calibration or torch2trt converters
# only for some networks: ModelAdapter.int8_calibration, torch2trt_converts).
LIMITS = ("needs a CUDA device", "int8 calibration is not available", "has no converters",
          "bf16")


def claimed_precisions(backend: str) -> tuple[str, ...]:
    module = importlib.import_module(f"hybridnets_ros.backends.{backend}_backend")
    return tuple(getattr(module, "PRECISIONS", None) or module.DTYPES)


def needs_cuda(backend: str) -> bool:
    return any("device cuda" in need for need in registry.missing(backend, "cpu"))


@pytest.fixture(scope="module")
def networks():
    """Each network with random weights, built once."""
    return {name: random_module(name) for name in ADAPTERS}


@pytest.mark.parametrize("precision", registry.PRECISIONS)
@pytest.mark.parametrize("model", tuple(ADAPTERS))
@pytest.mark.parametrize("backend", registry.BACKENDS)
def test_every_backend_model_and_precision_through_build_pipeline(
        backend, model, precision, networks, sample_images, monkeypatch):
    if needs_cuda(backend) or backend in ("tensorrt", "torch2trt"):
        standins.install(monkeypatch, torch2trt=True)
    device = "cuda" if needs_cuda(backend) else "cpu"
    config = NodeConfig.from_mapping({
        "model": model, "backend": backend, "precision": precision, "device": device,
        "allow_random_weights": True, "camera_resolution": [],
        "int8_calibration": str(sample_images[0].parent)})
    try:
        pipeline = build_pipeline(config, model=networks[model])
    except BackendUnavailable as exc:
        message = str(exc)
        if precision in claimed_precisions(backend):
            assert any(limit in message for limit in LIMITS), message
        else:  # not claimed: refused for the precision (or, first, for a model limit)
            assert ("precision" in message or precision in message
                    or any(limit in message for limit in LIMITS)), message
        return
    assert precision in claimed_precisions(backend)
    assert pipeline.backend.name == backend and pipeline.backend.precision == precision
    assert pipeline.backend.adapter is ADAPTERS[model] and type(pipeline) is Pipeline


@pytest.mark.slow  # builds the camera's engine at configure, as the node does
@pytest.mark.parametrize("version", standins.GENERATIONS)
def test_tensorrt_as_the_node_builds_it(sample_images, networks, monkeypatch, version):
    """auto on CUDA picks TensorRT; configure builds the camera's engine; frames run."""
    import cv2
    standins.install(monkeypatch, version)
    config = NodeConfig.from_mapping({"backend": "auto", "device": "cuda", "precision": "fp32",
                                      "allow_random_weights": True, "input_size": 256,
                                      "camera_resolution": [1280, 720]})
    pipeline = build_pipeline(config, model=networks["hybridnets"])
    assert pipeline.backend.name == "tensorrt"
    assert (1, 256, 256) in pipeline.backend.engines  # built at configure, not the first frame
    frame = cv2.imread(str(sample_images[0]))
    result = pipeline(frame)
    assert result.seg_mask.shape == frame.shape[:2] and result.seg_mask.dtype == np.uint8
    assert set(result.timings_ms) == {"preprocess", "network", "postprocess"}
