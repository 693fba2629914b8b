"""How a setting of the configuration is declared: a dataclass field and its metadata.

The common settings (pipeline.config) and the ones a network adds (its folder's settings
class, collected by core.registry) are declared the same way, so that the node's
parameters, the command-line options and docs/parameters.md all read one table.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any


def setting(default: Any, description: str, *, runtime: bool = False, configure: bool = False,
            range_: tuple[float, float] | None = None, choices: tuple[str, ...] | None = None,
            step: int | None = None, option: str | None = None,
            metavar: str | None = None) -> Any:
    """A field of a settings dataclass. ``runtime``: may change at any time; ``configure``:
    what configure builds from (the model, its engine), so it may change only while the node
    is unconfigured; neither: read at start-up only. ``option``: its command-line option
    (e.g. ``--size``), whose help is ``description``."""
    meta = {"description": description, "runtime": runtime, "configure": configure,
            "range": range_, "choices": choices, "step": step, "option": option,
            "metavar": metavar}
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default=tuple(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_types(settings_class: type) -> dict[str, Any]:
    """Each field's declared type (the annotations resolved): ``tuple[str, ...]`` etc."""
    return typing.get_type_hints(settings_class)


def item_type(declared: Any) -> type | None:
    """The item type of a list setting (``tuple[float, ...]`` -> float); None otherwise."""
    if typing.get_origin(declared) is tuple:
        return typing.get_args(declared)[0]
    return None
