"""A new network needs its folder and one registry line: a toy fifth network
(toy_network.py) runs through the registry, the pipeline and two engines, which have
never heard of it.

The files a real fifth network ``<name>`` touches:
- ``hybridnets_ros/core/models/<name>/``: ``network.py`` (the torch module), its pre- and
  post-processing and checkpoint knowledge (``__init__.py`` or modules of their own), and
  ``adapter.py`` (its ModelAdapter);
- ``hybridnets_ros/core/registry.py``: one line in ADAPTERS (and its settings class among
  ModelSettings' bases when it adds settings);
- docs: its row in docs/models.md, its golden test under test/.
Nothing else: test_layers.py fails if another module names it. Here the registry line is
the test's: the adapter is added to ADAPTERS for the test's duration.
"""
from __future__ import annotations

import numpy as np
import pytest

from hybridnets_ros.backends import create_backend
from hybridnets_ros.core import registry
from hybridnets_ros.pipeline.pipeline import Pipeline
from toy_network import ToyAdapter


@pytest.fixture
def toy(monkeypatch) -> ToyAdapter:
    adapter = ToyAdapter()
    monkeypatch.setitem(registry.ADAPTERS, adapter.name, adapter)
    return adapter


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (48, 80, 3), dtype=np.uint8)


def test_the_registry_serves_it(toy):
    assert registry.adapter("toy") is toy
    assert toy.cached_weights().name == "toy.pth" and not toy.downloadable


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_it_runs_through_the_pipeline(toy, image, backend):
    module = toy.load_module(None)
    pipeline = Pipeline(create_backend(backend, module, toy))
    result = pipeline(image)
    red = image[..., 2] > 127  # BGR: red is the last channel
    assert result.seg_mask.shape == image.shape[:2]
    assert red.any() and not red.all()
    np.testing.assert_array_equal(result.seg_mask, red.astype(np.uint8))
    assert len(result.detections) == 0
    np.testing.assert_array_equal(toy.class_ids(["red"]), [1])
