"""Building a pipeline from a NodeConfig: weights resolution, ``device: auto``, the backend,
the engine for the camera resolution. The one way the node and every command get a pipeline.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from ..backends import create_backend
from ..core.adapter import DetectionSettings
from ..core.weights import cache_dir
from .config import ConfigError, NodeConfig
from .pipeline import Pipeline

log = logging.getLogger(__name__)


def resolve_weights(config: NodeConfig) -> Path | None:
    """The checkpoint to load: ``weights``, else the cached one; None means random
    weights, which only ``allow_random_weights`` permits (else ConfigError)."""
    if config.weights:
        return Path(config.weights)
    adapter = config.adapter
    cached = adapter.cached_weights()
    if cached.is_file():
        return cached
    if config.allow_random_weights:
        return None
    get = (f"run `hybridnets download-weights --model {adapter.name}` (saves to {cached})"
           if adapter.downloadable else
           f"put {adapter.weights_name} from {adapter.weights_source} at {cached} "
           "(it has no public address `hybridnets download-weights` could fetch)")
    raise ConfigError(f"no {adapter.name} weights: give a checkpoint (parameter 'weights', "
                      f"option --weights), {get}, or allow random weights for a pipeline check "
                      "with meaningless outputs (allow_random_weights:=true, option "
                      "--random-weights)")


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_module(config: NodeConfig) -> tuple[torch.nn.Module, Path | None]:
    """The network with its weights, and the checkpoint path (None: random weights)."""
    weights = resolve_weights(config)
    if weights is None:
        log.warning("RANDOM WEIGHTS: %s outputs are meaningless", config.model)
        return _random_module(config), None
    return config.adapter.load_module(weights, **config.network_options()), weights


_CORE = Path(__file__).resolve().parents[1] / "core"


def _random_module(config: NodeConfig) -> torch.nn.Module:
    """The network with random weights, kept in the cache once built.

    A network's random set-up may be costly (HybridNets calibrates its BatchNorm statistics
    with eager forwards, seconds on a CPU), and every process started with random weights
    (the demo, pipeline checks, the test suite's nodes) would repeat it. The file is keyed by
    the network's source and torch's version, so a code change builds afresh; it is written
    under a temporary name and renamed, so concurrent processes never read half a file.
    """
    adapter, options = config.adapter, config.network_options()
    digest = hashlib.sha256(f"{config.model} {sorted(options.items())} {torch.__version__}".encode())
    for source in sorted(_CORE.rglob("*.py")):
        digest.update(source.read_bytes())
    path = cache_dir() / "random" / f"{config.model}-{digest.hexdigest()[:16]}.pth"
    if path.is_file():
        try:
            return adapter.load_module(path, **options)
        except Exception as exc:  # a damaged file: rebuild it
            log.warning("random weights in %s unusable (%s): building them again", path, exc)
    module = adapter.load_module(None, **options)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "wb") as out:
            torch.save(module.state_dict(), out)
        os.replace(part, path)
        for stale in path.parent.glob(f"{config.model}-*.pth"):  # earlier code's: one kept
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:  # an unwritable cache only costs the next process the set-up
        log.info("random weights not cached (%s)", exc)
    return module


def build_pipeline(config: NodeConfig, model: torch.nn.Module | None = None,
                   **backend_options) -> Pipeline:
    """A ready pipeline for ``config``; with ``camera_resolution`` set, the engine for it is
    built now rather than at the first frame (with N ``cameras`` and a network that batches
    them, also the one of batch N). ``model`` skips loading (bench reuses one);
    ``backend_options`` go to :func:`create_backend` (e.g. torch's ``optimize``)."""
    started = time.monotonic()
    weights = "given model"
    if model is None:
        model, path = load_module(config)
        weights = str(path) if path else "random weights"
    adapter = config.adapter
    backend = create_backend(config.backend, model, adapter,
                             device=resolve_device(config.device), precision=config.precision,
                             input_size=config.input_size, source_hw=config.source_hw,
                             calib=config.int8_calibration or None,
                             max_engines=config.max_engines, **backend_options)
    pipeline = Pipeline(backend, config.input_size, DetectionSettings.of(config),
                        options=config.network_options())
    if len(config.cameras) > 1 and backend.batching and adapter.batches_cameras:
        pipeline.batch_size = len(config.cameras)  # one frame per camera per batch
    if config.source_hw:
        input_hw = pipeline.network_input_hw(config.source_hw)
        log.info("preparing %s for %dx%d input (network %dx%d) ...", backend.describe(),
                 config.source_hw[1], config.source_hw[0], input_hw[1], input_hw[0])
        backend.prepare(input_hw)
        if pipeline.batch_size > 1:
            backend.prepare(input_hw, pipeline.batch_size)
    log.info("pipeline ready in %.1f s: %s, %s", time.monotonic() - started, weights,
             backend.describe())
    return pipeline
