"""Tools over the ROS layer: bags, replay, the demo graph, bench."""
