"""Files of the ROS package share directory (config/, launch/)."""
from __future__ import annotations

from pathlib import Path

PACKAGE = "hybridnets_ros"


def share_file(relative: str) -> Path:
    """The file of the checkout this package is imported from (the venv's editable install,
    a worktree on PYTHONPATH, colcon --symlink-install), else the installed copy (a colcon
    install space: share/hybridnets_ros/...). In that order: an ament prefix on
    AMENT_PREFIX_PATH, the venv's included, may hold another checkout's files."""
    source = Path(__file__).resolve().parents[2] / relative
    if source.exists():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        installed = Path(get_package_share_directory(PACKAGE)) / relative
        if installed.exists():
            return installed
    except (ImportError, LookupError, ValueError, OSError):
        pass  # no ament prefix holds the package
    raise FileNotFoundError(f"{relative} not found in {source.parent} or the {PACKAGE} share "
                            "directory")
