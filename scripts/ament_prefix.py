"""Make a Python venv an ament prefix of hybridnets_ros, as `colcon build` makes an install space.

    VENV/bin/python scripts/ament_prefix.py               # the venv itself (scripts/bootstrap.sh)
    VENV/bin/python scripts/ament_prefix.py --prefix DIR  # another prefix, e.g. a test's

What colcon installs for this package is put under the prefix:

    share/ament_index/resource_index/packages/hybridnets_ros   the ament index marker
    share/hybridnets_ros/package.xml, launch/*, config/*       links to this checkout's files
    lib/hybridnets_ros/<console script>                        setup.py's entry points, run
                                                               by this Python

so that ``get_package_share_directory('hybridnets_ros')``, launch_ros'
``Node(package='hybridnets_ros', executable='hybridnets_node')`` and ros2launch find the
package. Links, not copies: the project is installed editable (setuptools installs no
data_files then), and edits to launch/ and config/ stay live, as with ``colcon build
--symlink-install``. One link per file, as colcon makes them: ros2launch looks a launch file
up with os.walk, which does not enter a linked folder. A file added to launch/ or config/
needs a new run (bootstrap.sh's digest includes their names). The executables are written
from this checkout's setup.py, as setuptools writes console scripts: a venv shared by several
checkouts has the bin/ scripts of the one installed last.

Without --prefix, the venv also gets ``hybridnets_ros_ament.pth``: site runs its import line
at every start of the venv's Python and puts the venv first on AMENT_PREFIX_PATH (as the ROS
wheels' ros_wheels_bootstrapper.pth sets LD_LIBRARY_PATH), so nothing has to be exported or
sourced, and every process that Python starts (launch's nodes) inherits it. First, not last:
a sourced ROS distribution's packages do not match the venv's ROS wheels.

Idempotent: what is there is replaced. Standard library only.
"""
from __future__ import annotations

import argparse
import ast
import os
import shutil
import sys
import sysconfig
from pathlib import Path

PACKAGE = "hybridnets_ros"
REPO = Path(__file__).resolve().parents[1]
# share/hybridnets_ros/ as setup.py's data_files: folder -> its files installed
SHARED_FILES = ("package.xml",)
SHARED_FOLDERS = {"launch": "*.py", "config": "*"}
PTH_NAME = f"{PACKAGE}_ament.pth"
# The .pth: a comment, then one import line (site executes lines that start with "import").
PTH_TEXT = (
    f"# {PACKAGE} (scripts/ament_prefix.py): this venv is an ament prefix; put it first on "
    "AMENT_PREFIX_PATH\n"
    "import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([sys.prefix, *(p for p in "
    "os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p and p != sys.prefix)])\n")


def console_scripts() -> dict[str, str]:
    """setup.py's console_scripts: name -> "module:function" (its setup() call's literal
    entry_points)."""
    tree = ast.parse((REPO / "setup.py").read_text())
    (call,) = [node for node in ast.walk(tree) if isinstance(node, ast.Call)
               and getattr(node.func, "id", None) == "setup"]
    (entry_points,) = [ast.literal_eval(k.value) for k in call.keywords if k.arg == "entry_points"]
    return dict(line.replace(" ", "").split("=") for line in entry_points["console_scripts"])


def script(python: str, target: str) -> str:
    """A console script running ``target`` ("module:function") with ``python``."""
    module, function = target.split(":")
    return (f"#!{python}\nimport sys\nfrom {module} import {function}\n"
            f"if __name__ == '__main__':\n    sys.exit({function}())\n")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link(path: Path, target: Path) -> None:
    if path.is_symlink() and os.readlink(path) == str(target):
        return
    _remove(path)
    path.symlink_to(target)


def install(prefix: Path, python: str, executables: dict[str, str]) -> None:
    """The ament index marker, share/ and lib/ of the package under ``prefix``."""
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True, exist_ok=True)
    (index / PACKAGE).write_bytes((REPO / "resource" / PACKAGE).read_bytes())
    share = prefix / "share" / PACKAGE
    share.mkdir(parents=True, exist_ok=True)
    for name in SHARED_FILES:
        _link(share / name, REPO / name)
    for name, pattern in SHARED_FOLDERS.items():
        _remove(share / name)  # files removed from the checkout go too
        (share / name).mkdir()
        for source in sorted((REPO / name).glob(pattern)):
            if source.is_file():
                (share / name / source.name).symlink_to(source)
    lib = prefix / "lib" / PACKAGE
    _remove(lib)  # a console script removed since goes too
    lib.mkdir(parents=True)
    for name, target in executables.items():
        (lib / name).write_text(script(python, target))
        (lib / name).chmod(0o755)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefix", type=Path,
                        help="install under this folder instead of the venv (no .pth)")
    args = parser.parse_args(argv)
    if args.prefix is None and sys.prefix == sys.base_prefix:
        sys.exit("ament_prefix: run it with a venv's python (or give --prefix)")
    prefix = (args.prefix or Path(sys.prefix)).absolute()
    install(prefix, sys.executable, console_scripts())
    if args.prefix is None:
        (Path(sysconfig.get_path("purelib")) / PTH_NAME).write_text(PTH_TEXT)
    print(f"ament_prefix: {PACKAGE} is an ament package of {prefix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
