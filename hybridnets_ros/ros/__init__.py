"""ROS 2 glue: the node, its parameters, the frame processor, the outputs table, message
conversion and building. This layer and those above it (tools, cli) import rclpy; the
layers below (pipeline, backends, core) never do.
"""
