"""ROS 2 glue: message conversion, message building, parameters and the node.

Everything here imports rclpy message types; the core (hybridnets_ros.*) does not.
"""
