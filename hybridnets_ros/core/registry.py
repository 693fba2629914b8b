"""The networks this package runs: model name -> adapter. The one list that names them.

Adding a network: its folder ``core/models/<name>/`` with an ``adapter.py`` (see
core.adapter and docs/models.md), and one line here (a network that adds settings: its
settings class among ModelSettings' bases too).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .adapter import ModelAdapter
from .models.hybridnets.adapter import HybridNetsAdapter
from .models.hyctas.adapter import HyctasAdapter, HyctasSettings
from .models.hydra.adapter import HydraAdapter, HydraSettings
from .models.yolop.adapter import YolopAdapter

# The first is the default of the `model` setting.
ADAPTERS: dict[str, ModelAdapter] = {a.name: a for a in (
    HybridNetsAdapter(),
    HydraAdapter(),
    HyctasAdapter(),
    YolopAdapter(),
)}
DEFAULT_MODEL = next(iter(ADAPTERS))


def adapter(name: str) -> ModelAdapter:
    """The adapter of model ``name``; ValueError naming the choices."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(ADAPTERS)}") from None


def adapter_of(model: torch.nn.Module) -> ModelAdapter:
    """The adapter of a network module (by its class); TypeError for another module."""
    for candidate in ADAPTERS.values():
        if isinstance(model, candidate.network_type):
            return candidate
    raise TypeError(f"{type(model).__name__} is none of this package's networks "
                    f"({', '.join(ADAPTERS)}): say which network's outputs it gives")


@dataclass(frozen=True)
class ModelSettings(HyctasSettings, HydraSettings):
    """The settings the networks add (each adapter's ``settings_type``, declared in its
    folder): a base of the configuration, pipeline.config.NodeConfig. Fields come in
    reverse order of the bases."""
