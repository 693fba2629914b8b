"""Checkpoints of every network: loading with readable errors, the cache they go to.

Each network's folder knows its own checkpoint (name, address, random-weight set-up).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

_SHOW = 5  # keys listed per kind of mismatch


class WeightsError(RuntimeError, ValueError):
    """A weights file that is missing, unreadable or not a checkpoint of the network."""


def cache_dir() -> Path:
    """Where downloads go: $HYBRIDNETS_CACHE, else $XDG_CACHE_HOME/hybridnets_ros."""
    if os.environ.get("HYBRIDNETS_CACHE"):
        return Path(os.environ["HYBRIDNETS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hybridnets_ros"


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
                    label: str) -> torch.nn.Module:
    """Strict load of a checkpoint file (see :func:`read_state_dict`; an optional
    ``module.`` prefix stripped) into ``model``, a module of the network errors call
    ``label``; returns it. Raises WeightsError for an unreadable file, missing /
    unexpected / mis-shaped keys or NaN/Inf."""
    state = {key.removeprefix("module."): value for key, value in read_state_dict(path).items()}
    load_into(model, state, str(path), label)
    return model


def load_into(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str,
              label: str) -> None:
    """Strict load that reports missing, unexpected and mis-shaped keys instead of a trace;
    float16 values are cast to the model's dtype."""
    expected = model.state_dict()
    problems = key_mismatches(expected, state_dict)
    if problems:
        raise WeightsError("\n  ".join([f"{source} is not a {label} checkpoint for this model "
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
