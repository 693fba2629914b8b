"""hybridnets_node's ROS parameters, declared from the configuration's table of settings.

Names, defaults, descriptions and ranges come from :class:`NodeConfig`; settings marked
``runtime`` may change while the node runs, those marked ``configure`` while it is
unconfigured (the node refuses them otherwise), the others are read-only after start-up.
Validation is NodeConfig's: nothing here decides whether a value is acceptable.
"""
from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.parameter import Parameter

from ..core.settings import item_type
from ..pipeline.config import FIELD_TYPES, NodeConfig, settings

# Empty-array defaults need their type spelt out for rclpy: from the setting's item type.
_ARRAY_TYPES = {str: Parameter.Type.STRING_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                float: Parameter.Type.DOUBLE_ARRAY}


def descriptor(setting) -> ParameterDescriptor:
    meta = setting.metadata
    text = meta["description"]
    if meta["choices"]:
        text += f" ({', '.join(meta['choices'])})"
    if meta["configure"]:
        text += "; changes only while unconfigured, taking effect at the next configure"
    d = ParameterDescriptor(name=setting.name, description=text,
                            read_only=not (meta["runtime"] or meta["configure"]))
    # No ranges in the descriptor: rclpy would refuse a bad start-up value with a traceback;
    # NodeConfig refuses it with the reason instead. The range is stated in the text.
    if meta["range"] is not None:
        d.additional_constraints = f"within [{meta['range'][0]}, {meta['range'][1]}]"
    return d


def declare_all(node) -> None:
    for setting in settings():
        default = setting.default
        if isinstance(default, tuple):
            default = list(default)
            if not default:
                node.declare_parameter(setting.name,
                                       _ARRAY_TYPES[item_type(FIELD_TYPES[setting.name])],
                                       descriptor(setting))
                continue
        node.declare_parameter(setting.name, default, descriptor(setting))


def configure_time(names) -> list[str]:
    """Those of ``names`` that may change only while the node is unconfigured."""
    meta = {setting.name: setting.metadata for setting in settings()}
    return [name for name in names if name in meta and meta[name]["configure"]]


def parameter_values(node) -> dict[str, Any]:
    """Every setting's current parameter value (an unset empty array reads as [])."""
    values = {}
    for setting in settings():
        # get_parameter raises for a typed parameter without a value (an empty-array default)
        param = node.get_parameter_or(setting.name, None)
        values[setting.name] = ([] if param is None or param.type_ == Parameter.Type.NOT_SET
                                else param.value)
    return values


def config_from_node(node) -> NodeConfig:
    """The node's parameters as a NodeConfig; raises ConfigError naming every bad one."""
    return NodeConfig.from_mapping(parameter_values(node), source="parameters")
