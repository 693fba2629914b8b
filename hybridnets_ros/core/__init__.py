"""Core: the networks, pre- and post-processing, NMS, camera and bird's-eye geometry.

No ROS, no inference engines: everything above imports this, it imports nothing above.
"""
