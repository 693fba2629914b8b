"""Nav2's lifecycle_manager, its part in managing nodes, played in Python with the real bondpy.

Step by step after nav2_lifecycle_manager/src/lifecycle_manager.cpp (Jazzy):
``changeStateForNode`` sends ``change_state`` and then checks ``get_state`` against the
transition's goal; after an ACTIVATE it calls ``createBondConnection`` (a bond
``Bond("bond", node_name)`` with heartbeat timeout ``bond_timeout``, 4 s, and period 0.10 s,
started, then ``waitUntilFormed`` for half the timeout, else "Server ... was unable to be
reached after 4.00s by bond"); after a DEACTIVATE it erases the bond; ``startup`` configures
and activates every node in ``node_names`` in order. ``node_names`` and the topic ``bond``
resolve in the manager's namespace, as they do for the C++ manager.

The manager's bonds live on nodes of their own, spun by their own threads, stopped before
a bond is erased: bondpy's ``shutdown()`` destroys its subscription and publisher under a
spinning executor otherwise (hybridnets_ros/ros/bond.py says why). The C++ manager has no such
problem; this changes nothing the node sees.

As a script (``python nav2_manager.py NAMESPACE NODE_NAME``) it brings the node up, prints
``bonded`` (or ``failed: ...``) and holds the bond until it is killed; with ``--bond-only``
it only bonds with a node that is already active. It imports only rclpy, lifecycle_msgs and
bondpy, so that it runs in the DDS domain and set-up it inherits.
"""
from __future__ import annotations

import argparse
import threading
import time

import rclpy
from bondpy.bondpy import Bond
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.duration import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

GOAL = {Transition.TRANSITION_CONFIGURE: "inactive", Transition.TRANSITION_CLEANUP: "unconfigured",
        Transition.TRANSITION_ACTIVATE: "active", Transition.TRANSITION_DEACTIVATE: "inactive"}


class _Spinning:
    """A node spun by an executor in a thread of its own until :meth:`close`."""

    def __init__(self, name: str, namespace: str, context):
        self.node = Node(name, namespace=namespace, context=context)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stopping.is_set() and self.node.context.ok():
            self._executor.spin_once(timeout_sec=0.05)

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)

    def close(self) -> None:
        self.stop()
        self._executor.shutdown()
        self.node.destroy_node()


class ManagerBond:
    """The manager's side of one node's bond (``createBondConnection``)."""

    def __init__(self, namespace: str, node_name: str, bond_timeout: float, context):
        self._spinning = _Spinning(f"lifecycle_manager_bond_{node_name.replace('/', '_')}",
                                   namespace, context)
        self.bond = Bond(self._spinning.node, "bond", node_name)
        self.bond.heartbeat_timeout = bond_timeout
        self.bond.heartbeat_period = 0.10
        self.bond.start()

    def erase(self) -> None:
        self._spinning.stop()
        self.bond.shutdown()  # as the C++ Bond's destructor: tells the node
        self._spinning.close()


class Nav2Manager:
    def __init__(self, namespace: str = "", node_names=("hybridnets_node",),
                 bond_timeout: float = 4.0, context=None):
        self.namespace = namespace
        self.node_names = list(node_names)
        self.bond_timeout = bond_timeout
        self._context = context or rclpy.get_default_context()
        self._spinning = _Spinning("lifecycle_manager", namespace, self._context)
        node = self._spinning.node
        self._clients = {name: (node.create_client(ChangeState, f"{name}/change_state"),
                                node.create_client(GetState, f"{name}/get_state"))
                         for name in self.node_names}
        self.bonds: dict[str, ManagerBond] = {}
        self.instance_ids: set[str] = set()  # of every bond it made (bondpy's instance_id)
        self.errors: list[str] = []

    # ---- lifecycle_manager.cpp
    def startup(self) -> bool:
        return all(self.change_state_for_node(name, Transition.TRANSITION_CONFIGURE)
                   and self.change_state_for_node(name, Transition.TRANSITION_ACTIVATE)
                   for name in self.node_names)

    def change_state_for_node(self, name: str, transition: int) -> bool:
        if not self._change_state(name, transition) or self.get_state(name) != GOAL[transition]:
            self.errors.append(f"Failed to change state for node: {name}")
            return False
        if transition == Transition.TRANSITION_ACTIVATE:
            return self.create_bond_connection(name)
        if transition == Transition.TRANSITION_DEACTIVATE and name in self.bonds:
            self.bonds.pop(name).erase()
        return True

    def create_bond_connection(self, name: str) -> bool:
        if name in self.bonds or self.bond_timeout <= 0:
            return True
        bond = self.bonds[name] = ManagerBond(self.namespace, name, self.bond_timeout,
                                              self._context)
        self.instance_ids.add(bond.bond.instance_id)
        if not bond.bond.wait_until_formed(Duration(seconds=self.bond_timeout / 2)):
            self.errors.append(f"Server {name} was unable to be reached after "
                               f"{self.bond_timeout:.2f}s by bond.")
            return False
        return True

    def is_broken(self, name: str) -> bool:
        return self.bonds[name].bond.is_broken()

    # ---- the service calls, surviving a request or response lost before the two sides
    # matched (volatile service QoS: seen on CI as a first call that is never answered)
    def get_state(self, name: str, timeout: float = 60.0) -> str:
        client = self._clients[name][1]
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name}: no server"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            future = client.call_async(GetState.Request())
            if _wait(future, 5.0):
                return future.result().current_state.label
            client.remove_pending_request(future)
        raise TimeoutError(f"{client.srv_name}: no answer within {timeout} s")

    def _change_state(self, name: str, transition: int, timeout: float = 120.0) -> bool:
        client = self._clients[name][0]
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name}: no server"
        deadline = time.monotonic() + timeout
        start = self.get_state(name)
        request = ChangeState.Request(transition=Transition(id=transition))
        future, sent = client.call_async(request), 1
        while not _wait(future, 5.0):
            assert time.monotonic() < deadline, f"transition {transition}: no answer in {timeout} s"
            now = self.get_state(name)
            if now == GOAL[transition]:
                return True  # done, its response lost
            if now == start:  # the request lost
                client.remove_pending_request(future)
                future, sent = client.call_async(request), sent + 1
        return future.result().success or (sent > 1 and self.get_state(name) == GOAL[transition])

    def close(self) -> None:
        for bond in self.bonds.values():
            bond.erase()
        self.bonds = {}
        self._spinning.close()


def _wait(future, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    return future.done()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("namespace")
    parser.add_argument("node_name")
    parser.add_argument("--bond-only", action="store_true")
    parser.add_argument("--bond-timeout", type=float, default=4.0)
    args = parser.parse_args()
    rclpy.init()
    manager = Nav2Manager(args.namespace, [args.node_name], args.bond_timeout)
    if args.bond_only:
        ok = manager.create_bond_connection(args.node_name)
    else:
        ok = manager.startup()
    print("bonded" if ok else f"failed: {manager.errors}", flush=True)
    while True:  # holds the bond until killed
        time.sleep(1)


if __name__ == "__main__":
    main()
