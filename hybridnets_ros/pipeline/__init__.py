"""One frame through a backend: image -> Result; the typed node configuration; no ROS."""
