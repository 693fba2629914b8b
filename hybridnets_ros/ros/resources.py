"""Files of the ROS package share directory (config/, launch/)."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "hybridnets_ros"


def share_file(relative: str) -> Path:
    """The installed copy (colcon: share/hybridnets_ros/...), else the source tree's."""
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory(PACKAGE)) / relative
        if installed.exists():
            return installed
    except (ImportError, LookupError, ValueError, OSError):
        pass  # not installed through ament (pip venv, editable install)
    source = Path(__file__).resolve().parents[2] / relative
    if source.exists():
        return source
    raise FileNotFoundError(f"{relative} not found in the {PACKAGE} share directory or {source.parent}")
