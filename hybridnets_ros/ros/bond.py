"""The bond Nav2's lifecycle_manager expects from each node it manages.

After activating a node, lifecycle_manager waits (half its ``bond_timeout``, 4 s by
default) for a bond on topic ``bond`` whose id is the node's name, and fails the bring-up
without one; Nav2's own servers create it on activate and drop it on deactivate, with a
0.1 s heartbeat and a 4 s heartbeat timeout (nav2_util/src/lifecycle_node.cpp). This node
does the same with ``bondpy``, bond_core's Python side (in bond_core from 4.1.0 on Jazzy
and 4.1.1 on Humble; Kilted and Rolling). Where it is not installed (the pip venv, an older
Humble) there is no bond, and lifecycle_manager needs ``bond_timeout: 0.0`` (docs/nav2.md).
"""
from __future__ import annotations

HEARTBEAT_PERIOD_S = 0.1   # as Nav2's servers
HEARTBEAT_TIMEOUT_S = 4.0
TOPIC = "bond"
NO_BONDPY = ("bondpy is not installed: no bond with Nav2's lifecycle_manager; under it set "
             "bond_timeout: 0.0 (docs/nav2.md)")


def import_bond_class():
    """bondpy's Bond class, or None where bondpy is not installed."""
    try:
        from bondpy.bondpy import Bond
    except ImportError:
        return None
    return Bond


class ManagerBond:
    """The node's side of the bond: formed while active, broken on deactivate."""

    def __init__(self, node):
        self._node = node
        self._bond_class = import_bond_class()
        self._bond = None

    @property
    def available(self) -> bool:
        return self._bond_class is not None

    def create(self) -> None:
        if self._bond_class is None or self._bond is not None:
            return
        logger = self._node.get_logger()
        name = self._node.get_name()
        bond = self._bond_class(self._node, TOPIC, name,
                                on_broken=lambda: logger.info(f"bond ({name}) broken"),
                                on_formed=lambda: logger.info(f"bond ({name}) formed"))
        bond.heartbeat_period = HEARTBEAT_PERIOD_S
        bond.heartbeat_timeout = HEARTBEAT_TIMEOUT_S
        bond.start()
        self._bond = bond
        logger.info(f"bond ({name}) to the lifecycle manager created")

    def destroy(self) -> None:
        bond, self._bond = self._bond, None
        if bond is None:
            return
        try:
            bond.shutdown()  # tells the manager, which then drops its side
        except Exception:  # ROS is already down (Ctrl-C): the manager sees the heartbeat stop
            pass
