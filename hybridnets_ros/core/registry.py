"""The networks this package runs: model name -> adapter. The one list that names them.

Adding a network: its folder ``core/models/<name>/`` with an ``adapter.py`` (see
core.adapter and docs/models.md), and one line here (a network that adds settings: its
settings class among ModelSettings' bases too).
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class ModelSettings(HyctasSettings, HydraSettings):
    """The settings the networks add (each adapter's ``settings_type``, declared in its
    folder): a base of the configuration, pipeline.config.NodeConfig. Fields come in
    reverse order of the bases."""
