"""Checkpoint loading with readable errors, random initialisation and download.

The released checkpoint is the original project's GitHub release ``v1.0/hybridnets.pth``
(MIT licence): a plain ``state_dict`` that loads into :class:`HybridNets` with strict=True.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .models.hybridnets import HybridNets
from .spec import BDD100K, ModelSpec

log = logging.getLogger(__name__)

RELEASE_URL = "https://github.com/datvuthanh/HybridNets/releases/download/v1.0/hybridnets.pth"
WEIGHTS_FILENAME = "hybridnets.pth"
_SHOW = 5  # keys listed per kind of mismatch
BN_GAMMA = (0.2, 0.4)  # random BatchNorm scales; larger ones make the random net chaotic


class WeightsError(RuntimeError, ValueError):
    """A weights file that is missing, unreadable or not a checkpoint of the network."""


def cache_dir() -> Path:
    """Where downloads go: $HYBRIDNETS_CACHE, else $XDG_CACHE_HOME/hybridnets_ros."""
    if os.environ.get("HYBRIDNETS_CACHE"):
        return Path(os.environ["HYBRIDNETS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hybridnets_ros"


def default_weights_path() -> Path:
    return cache_dir() / WEIGHTS_FILENAME


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, or a WeightsError saying what is wrong with it."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"weights file not found: {path}")
    if not path.is_file():
        raise WeightsError(f"weights path is not a file: {path}")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file is empty (0 bytes): {path}")
    try:
        # weights_only: never execute code from a checkpoint file.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read {path} as a PyTorch checkpoint (truncated, corrupt or "
                           f"another format?): {reason}") from None
    # Training checkpoints often wrap the state_dict; unwrap the two usual keys only.
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state_dict of tensors")
    return dict(obj)


def key_mismatches(expected: Mapping[str, torch.Tensor],
                   state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    """One line per kind of mismatch (missing, unexpected, mis-shaped keys) between a
    model's state dict and a checkpoint's, each with the first few keys; empty: they fit."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [f"{k} {tuple(state_dict[k].shape)} (expected {tuple(v.shape)})"
                 for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    lines = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if keys:
            lines.append(f"{len(keys)} {label} keys: {_listing(keys)}")
    return lines


def _listing(keys: list[str]) -> str:
    more = f", ... ({len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike,
                    network: str) -> torch.nn.Module:
    """Strict load of a checkpoint file (see :func:`read_state_dict`; an optional
    ``module.`` prefix stripped) into ``model`` of ``network``; returns it. Raises
    WeightsError for an unreadable file, missing / unexpected / mis-shaped keys or NaN/Inf."""
    state = {key.removeprefix("module."): value for key, value in read_state_dict(path).items()}
    load_into(model, state, str(path), network)
    return model


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
              network: str = "HybridNets-D3") -> None:
    """Strict load that reports missing, unexpected and mis-shaped keys instead of a trace;
    float16 values are cast to the model's dtype."""
    expected = model.state_dict()
    problems = key_mismatches(expected, state_dict)
    if problems:
        raise WeightsError("\n  ".join([f"{source} is not a {network} checkpoint for this model "
                                        f"({len(state_dict)} entries, the model has "
                                        f"{len(expected)}; wrong architecture?):"] + problems))
    # NaN or Inf weights load fine and then give NaN outputs: no detections, masks of zeros.
    non_finite = [k for k, v in state_dict.items()
                  if v.is_floating_point() and not torch.isfinite(v).all()]
    if non_finite:
        raise WeightsError(f"{source}: {len(non_finite)} non-finite tensors, NaN or Inf: "
                           f"{_listing(non_finite)} (a damaged or diverged checkpoint)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()},
                          strict=True)


def random_init(model: HybridNets, seed: int = 0) -> None:
    """Deterministic random weights: outputs are meaningless, but every stage runs.

    As for the golden reference checkpoint, BatchNorm statistics are then calibrated layer
    by layer, here on frames of the built-in synthetic road sequence (per-channel mean;
    per-channel variance floored at the channel average, since the tiny variances of the
    small P6/P7 maps would blow up other inputs). A random network stays well behaved only
    near its calibration data: on the demo sequence it gives some boxes and masks, on real
    photos it may flag thousands of anchors. The classifier bias is finally shifted so that
    about eight anchors per calibration frame score 0.3.
    """
    from .preprocess import Preprocessor
    from .synthetic import SyntheticRoad, default_camera

    def calibrate(bn: torch.nn.BatchNorm2d, inputs: tuple[torch.Tensor]) -> None:
        x = inputs[0]
        bn.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        var = x.var(dim=(0, 2, 3))
        bn.running_var.copy_(torch.maximum(var, var.mean()))

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_w1") or name.endswith("_w2"):
                p.uniform_(0.5, 1.5, generator=gen)
            elif p.dim() > 1:
                p.normal_(0.0, (1.0 / p[0].numel()) ** 0.5, generator=gen)
            elif name.endswith(".weight"):
                p.uniform_(*BN_GAMMA, generator=gen)
            else:
                p.normal_(0.0, 0.1, generator=gen)
        hooks = [m.register_forward_pre_hook(calibrate) for m in model.modules()
                 if isinstance(m, torch.nn.BatchNorm2d)]
        scene, preprocess = SyntheticRoad(default_camera()), Preprocessor(640)
        times = (0.0, 0.5, 1.0)
        batch = np.concatenate([preprocess(scene.render(t)[0])[0].copy() for t in times])
        _, scores, _ = model.eval()(torch.from_numpy(batch))
        for hook in hooks:
            hook.remove()
        kth_best = torch.logit(scores.double().flatten()).kthvalue(scores.numel() - 8 * len(times))
        bias = model.classifier.header.pointwise_conv.conv.bias
        bias += float(torch.logit(torch.tensor(0.3, dtype=torch.float64)) - kth_best.values)


def build_model(weights: str | os.PathLike | None = None, random_weights: bool = False,
                spec: ModelSpec = BDD100K) -> HybridNets:
    """An eval-mode network with the given checkpoint, or random weights if asked."""
    model = HybridNets(spec.network)
    if weights is not None:
        load_into(model, read_state_dict(weights), str(weights))
    elif random_weights:
        random_init(model)
    else:
        raise WeightsError("no weights given")
    return model.eval().requires_grad_(False)


def download_weights(dest: str | os.PathLike | None = None, url: str = RELEASE_URL,
                     progress: bool = True, timeout: float = 30.0) -> Path:
    """Download the released checkpoint to ``dest`` (default: the cache), atomically.

    The file is written beside ``dest`` under a temporary name, checked by a strict load
    and only then renamed into place; any failure removes it.
    """
    from tqdm import tqdm

    dest = Path(dest) if dest else default_weights_path()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as exc:
                raise WeightsError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
            with response, tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                                unit="B", unit_scale=True, unit_divisor=1024,
                                desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        load_into(HybridNets(), read_state_dict(tmp), f"downloaded file from {url}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("saved %s (sha256 %s)", dest, digest.hexdigest())
    return dest
