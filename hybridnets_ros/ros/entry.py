"""The ``hybridnets_node`` console script: SIGINT and SIGTERM are handled before the node's
imports (torch, cv2, rclpy: seconds), so a signal at any moment of start-up ends it with
exit status 0 (shutdown.py). ``python -m hybridnets_ros.ros.node`` does the same at the top
of node.py."""
from __future__ import annotations

from .shutdown import process_shutdown


def main() -> None:
    process_shutdown()
    from .node import main as node_main
    node_main()
