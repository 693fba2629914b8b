"""docs/parameters.md: the node's parameters as a table, made from NodeConfig.

Regenerate after changing a setting (test_settings checks the file is current)::

    python -m hybridnets_ros.pipeline.parameters_doc > docs/parameters.md
"""
from __future__ import annotations

import typing

from .config import FIELD_TYPES, settings

HEADER = """# Parameters of hybridnets_node

Generated from `NodeConfig` (hybridnets_ros/pipeline/config.py and the settings classes in
each network's folder) by `python -m hybridnets_ros.pipeline.parameters_doc`; do not edit by
hand. *Changes*: **run time** at any time; **unconfigured** only while the lifecycle node is
unconfigured (they take effect at the next configure); **start-up** read once. The commands
(`hybridnets infer`, `replay`, ...) take the settings that have an option.

| Parameter | Type | Default | Changes | Allowed | Option | Description |
|---|---|---|---|---|---|---|
"""


def _type(declared) -> str:
    if typing.get_origin(declared) is tuple:
        return f"{typing.get_args(declared)[0].__name__}[]"
    return declared.__name__


def _value(value) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return f'"{value}"' if value == "" else str(value)


def _allowed(meta) -> str:
    if meta["choices"]:
        return ", ".join(meta["choices"])
    if meta["range"] is not None:
        low, high = meta["range"]
        return f"[{low}, {high}]" + (f", steps of {meta['step']}" if meta["step"] else "")
    return ""


def markdown() -> str:
    rows = []
    for f in settings():
        meta = f.metadata
        changes = ("run time" if meta["runtime"] else "unconfigured" if meta["configure"]
                   else "start-up")
        cells = (f"`{f.name}`", _type(FIELD_TYPES[f.name]), f"`{_value(f.default)}`", changes,
                 _allowed(meta), f"`{meta['option']}`" if meta["option"] else "",
                 meta["description"])
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |\n")
    return HEADER + "".join(rows)


if __name__ == "__main__":
    print(markdown(), end="")
