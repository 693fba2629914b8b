"""HybridNets perception for ROS 2: detection, drivable area and lane lines."""

__version__ = "0.1.0"
