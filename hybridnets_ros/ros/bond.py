"""The bond Nav2's lifecycle_manager expects from each node it manages.

After activating a node, lifecycle_manager waits (half its ``bond_timeout``, 4 s by
default) for a bond on topic ``bond`` in its namespace whose id is the node's name, and
fails the bring-up without one; Nav2's own servers create it on activate and drop it on
deactivate, with a 0.1 s heartbeat and a 4 s heartbeat timeout (nav2_util/src/lifecycle_node.cpp).
This node does the same with ``bondpy``, bond_core's Python side (in bond_core from 4.1.0 on
Jazzy and 4.1.1 on Humble; Kilted and Rolling). Where it is not installed (the pip venv, an
older Humble) there is no bond, and lifecycle_manager needs ``bond_timeout: 0.0``
(docs/nav2.md).

Why each bond has a node and an executor of its own: bondpy's ``Bond.shutdown()`` (bond_core's
ros2 branch, the code released as 4.1.0 and 4.1.1; ``__del__`` calls it too) ends a bond
with ``.destroy()`` on its own subscription and publisher. rclpy's ``destroy()`` only marks
the handle; the entity stays in its node's lists (``Node.destroy_subscription`` is what
removes it), so the next wait of whichever executor spins that node enters the destroyed
handle and ``spin()`` raises ``InvalidHandle``: with the bond on this node, every deactivate
ended the process. Here bondpy gets a hidden node (same context, same namespace: ``bond``
resolves where Nav2's manager looks) spun by a thread of its own, and a bond is shut down
only after that thread has stopped, then its node destroyed. Whatever a bondpy version does
with its entities (``destroy()``, ``Node.destroy_*``, nothing), no executor waits on them
then. A fresh node per bond also avoids another quirk: on a heartbeat timeout bondpy declares
the parameter ``/bond_disable_heartbeat_timeout`` on its node, which raises the second time on
the same node, and that bond then never breaks.

A bond the manager never formed ends quietly after bondpy's connect timeout (10 s): no
manager is a normal set-up (autostart). A formed bond that breaks while active means the
manager died or stopped: logged as a warning once, shown in /diagnostics until the next
deactivate, and the node keeps running, as Nav2's servers do.
"""
from __future__ import annotations

import threading

from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

HEARTBEAT_PERIOD_S = 0.1   # as Nav2's servers
HEARTBEAT_TIMEOUT_S = 4.0
TOPIC = "bond"
BREAK_WAIT_S = 0.5         # at most, for the manager to confirm a broken bond (bondcpp: 0.1)
NO_BONDPY = ("bondpy is not installed: no bond with Nav2's lifecycle_manager; under it set "
             "bond_timeout: 0.0 (docs/nav2.md)")


def import_bond_class():
    """bondpy's Bond class, or None where bondpy is not installed."""
    try:
        from bondpy.bondpy import Bond
    except ImportError:
        return None
    return Bond


class _BondLink:
    """One bondpy Bond on a hidden node that only this link's thread spins."""

    def __init__(self, parent: Node, bond_class, on_formed, on_broken,
                 heartbeat_timeout: float, connect_timeout: float | None):
        name = f"_{parent.get_name()}_bond"  # leading underscore: hidden in `ros2 node list`
        # The local remap keeps a process-wide `-r __node:=...` from giving it the node's name.
        self.node = Node(name, namespace=parent.get_namespace(), context=parent.context,
                         cli_args=["--ros-args", "-r", f"__node:={name}"],
                         start_parameter_services=False)
        self._executor = SingleThreadedExecutor(context=parent.context)
        self._executor.add_node(self.node)
        self._stopping = threading.Event()
        # Ends the thread's wait at once (Executor.wake() does not reach a spin_once that is
        # already waiting: a close then took the whole 0.5 s timeout).
        self._wake = self.node.create_guard_condition(lambda: None)
        try:
            self.bond = bond_class(self.node, TOPIC, parent.get_name(),
                                   on_broken=on_broken, on_formed=on_formed)
            self.bond.heartbeat_period = HEARTBEAT_PERIOD_S
            self.bond.heartbeat_timeout = heartbeat_timeout
            if connect_timeout is not None:
                self.bond.connect_timeout = connect_timeout
            self.bond.start()
        except Exception:
            self._executor.shutdown(timeout_sec=0)
            self.node.destroy_node()
            raise
        self._thread = threading.Thread(target=self._spin, name="bond", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stopping.is_set():
            try:
                self._executor.spin_once(timeout_sec=0.5)
            except ExternalShutdownException:
                return
            except Exception as exc:  # the bond alone stops; the node goes on
                if self.node.context.ok():
                    self.node.get_logger().error(
                        f"bond thread stopped: {type(exc).__name__}: {exc}")
                return

    def close(self) -> None:
        """Breaks the bond, telling the manager, then stops the thread, lets bondpy destroy its
        entities and drops the node."""
        try:
            # As bondcpp's ~Bond: break, then wait briefly for the manager's answer (this
            # thread still spins to receive it); bondpy meanwhile repeats "dead" every 50 ms.
            # shutdown() alone destroys its publisher right after its one "dead" message,
            # which may then never leave.
            self.bond.break_bond()
            self.bond.wait_until_broken(Duration(seconds=BREAK_WAIT_S))
        except Exception:  # ROS is already down: the manager sees the heartbeat stop
            pass
        self._stopping.set()
        self._wake.trigger()
        self._thread.join(timeout=5.0)
        try:
            self.bond.shutdown()
        except Exception:
            pass
        self._executor.shutdown(timeout_sec=0)
        self.node.destroy_node()


class ManagerBond:
    """The node's side of the bond: formed while active, dropped on deactivate.

    ``heartbeat_timeout`` and ``connect_timeout`` (bondpy's default 10 s) are Nav2's unless a
    test shortens them."""

    def __init__(self, node: Node, heartbeat_timeout: float = HEARTBEAT_TIMEOUT_S,
                 connect_timeout: float | None = None):
        self._node = node
        self._bond_class = import_bond_class()
        self._heartbeat_timeout = heartbeat_timeout
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._link: _BondLink | None = None
        self._token: object | None = None  # the current bond's; a dropped bond's callbacks differ
        self._state = "none"        # none, waiting, formed, broken, unbonded
        self._told_unbonded = False

    @property
    def available(self) -> bool:
        return self._bond_class is not None

    @property
    def state(self) -> str:
        return self._state

    def create(self) -> None:
        if self._bond_class is None or self._link is not None:
            return
        token = object()
        with self._lock:
            self._token, self._state = token, "waiting"
        try:
            self._link = _BondLink(self._node, self._bond_class,
                                   on_formed=lambda: self._on_formed(token),
                                   on_broken=lambda: self._on_broken(token),
                                   heartbeat_timeout=self._heartbeat_timeout,
                                   connect_timeout=self._connect_timeout)
        except Exception as exc:  # a bondpy unlike those read (bond.py): the node runs without
            with self._lock:
                self._token, self._state = None, "none"
            self._node.get_logger().error(f"no bond with the lifecycle manager: "
                                          f"{type(exc).__name__}: {exc}")
            return
        self._node.get_logger().info(f"bond ({self._node.get_name()}) to the lifecycle manager "
                                     "created")

    def destroy(self) -> None:
        with self._lock:
            link, self._link = self._link, None
            self._token, self._state = None, "none"
        if link is not None:
            link.close()

    def _on_formed(self, token) -> None:
        with self._lock:
            if token is not self._token:
                return
            self._state = "formed"
        self._node.get_logger().info(f"bond ({self._node.get_name()}) with the lifecycle "
                                     "manager formed")

    def _on_broken(self, token) -> None:
        with self._lock:
            if token is not self._token:
                return
            formed = self._state == "formed"
            self._state = "broken" if formed else "unbonded"
            tell = formed or not self._told_unbonded
            self._told_unbonded |= not formed
        if not tell:
            return
        log = self._node.get_logger()
        if formed:
            log.warning(f"bond ({self._node.get_name()}) with the lifecycle manager broken: "
                        f"{self.problem()}")
        else:
            log.info(f"no lifecycle manager bonded with {self._node.get_name()} (fine without "
                     "Nav2's lifecycle_manager)")

    def problem(self) -> str | None:
        """Why the bond needs attention, or None."""
        if self._state != "broken":
            return None
        return (f"the manager stopped or sent no heartbeat for {self._heartbeat_timeout:g} s; "
                "this node keeps running, unsupervised until deactivated and activated again")

    def describe(self) -> str:
        """The bond's state for /diagnostics."""
        if self._bond_class is None:
            return "none (bondpy not installed)"
        return {"none": "none (made on activate)", "waiting": "waiting for a lifecycle manager",
                "formed": "formed", "unbonded": "no lifecycle manager bonded",
                "broken": "broken"}[self._state]
