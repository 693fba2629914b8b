"""Pure PyTorch HybridNets network: no ROS, no file or network I/O."""
from .hybridnets import HybridNets, NetworkConfig

__all__ = ["HybridNets", "NetworkConfig"]
