"""The package's import rule, checked on the source with the standard library only.

Layers, lowest first: core -> backends -> pipeline -> ros -> tools -> cli. A module may
import its own layer and the layers below it, never one above; only ros, tools and cli
may import rclpy or ROS message packages; and no group of modules imports each other in a
loop (function-level imports included: a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import graphlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "hybridnets_ros"
LAYERS = ("core", "backends", "pipeline", "ros", "tools", "cli")
ROS_LAYERS = {"ros", "tools", "cli"}
ROS_MODULES = {"rclpy", "rosbags", "builtin_interfaces", "std_msgs", "sensor_msgs", "nav_msgs",
               "vision_msgs", "hybridnets_msgs", "geometry_msgs", "diagnostic_msgs", "rcl_interfaces",
               "visualization_msgs", "tf2_ros", "ament_index_python", "bond", "bondpy",
               "message_filters", "sensor_msgs_py", "lifecycle_msgs", "launch", "launch_ros",
               "ros2launch"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (at any depth of the file)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            # `from pkg import submodule` depends on the submodule itself
            found |= {f"{module}.{alias.name}" for alias in node.names
                      if (PACKAGE_DIR.parent / f"{module}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()
                      or (PACKAGE_DIR.parent / f"{module}.{alias.name}".replace(".", "/") / "__init__.py").exists()}
    return found


def package_modules() -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    files = {module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    return {name: {m for m in imports_of(path) if m in files and m != name}
            for name, path in files.items()}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def test_every_module_belongs_to_a_layer():
    stray = [m for m in package_modules() if m != "hybridnets_ros" and layer_of(m) is None]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_no_module_imports_a_layer_above_it():
    wrong = []
    for module, imported in package_modules().items():
        own = layer_of(module)
        if own is None:
            continue
        for other in imported:
            theirs = layer_of(other)
            if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
                wrong.append(f"{module} ({own}) imports {other} ({theirs})")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def test_only_the_ros_tools_and_cli_layers_import_ros():
    wrong = []
    for path in PACKAGE_DIR.rglob("*.py"):
        module = module_name(path)
        if layer_of(module) in ROS_LAYERS:
            continue
        ros = {m for m in imports_of(path) if m.split(".")[0] in ROS_MODULES}
        if ros:
            wrong.append(f"{module} imports {', '.join(sorted(ros))}")
    assert not wrong, "ROS imports below the ros layer:\n" + "\n".join(wrong)


def test_no_import_cycle():
    graph = package_modules()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
    assert len(order) == len(graph)

