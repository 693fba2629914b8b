"""The package's import rule, checked on the source with the standard library only.

Layers, lowest first: core -> backends -> pipeline -> ros -> tools -> cli. A module may
import its own layer and the layers below it, never one above; only ros, tools and cli
may import rclpy or ROS message packages; and no group of modules imports each other in a
loop (function-level imports included: a lazy import is still a dependency).

One network = one folder: only ``core/models/<name>/`` and ``core/registry.py`` import a
model folder or name a network; the rest reads the adapter.
"""
from __future__ import annotations

import ast
import graphlib
import re
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



# --- One network = one folder: nothing else imports or names a network. ---

MODELS_DIR = PACKAGE_DIR / "core" / "models"
NETWORKS = tuple(sorted(p.name for p in MODELS_DIR.iterdir() if (p / "adapter.py").is_file()))
# The one module besides the folders that may: it lists them.
REGISTRY = "hybridnets_ros.core.registry"
# "hybridnets" also names the product: the package, its node (and the node's class) and the
# command. Only these identifiers may contain it; in strings, lowercase "hybridnets" is the
# command, node or params file, so there the network's own spelling and its checkpoint's
# file name count, as does any network name compared with or used as a dict key.
PRODUCT_NAMES = {"hybridnets_ros", "hybridnets_node", "HybridNetsNode"}
NETWORK_TEXT = re.compile(r"(?i:yolop|hydra|hyctas)|HybridNets|hybridnets\.pth")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes (documentation may name the networks)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _identifiers(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node, node.id
        elif isinstance(node, ast.Attribute):
            yield node, node.attr
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.name
        elif isinstance(node, ast.arg):
            yield node, node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield node, node.arg
        elif isinstance(node, ast.alias) and node.asname:
            yield node, node.asname


def network_mentions(path: Path, networks=NETWORKS) -> list[str]:
    """Where ``path`` imports a model folder or names a network, one line each."""
    tree = ast.parse(path.read_text(), str(path))
    where = path.relative_to(PACKAGE_DIR.parent)
    found = [f"{where}: imports {m}" for m in sorted(imports_of(path))
             if m.startswith("hybridnets_ros.core.models")]
    for node, name in _identifiers(tree):
        if name not in PRODUCT_NAMES and any(n in name.lower() for n in networks):
            found.append(f"{where}:{node.lineno} identifier {name}")
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docs and NETWORK_TEXT.search(node.value)):
            found.append(f"{where}:{node.lineno} string {node.value[:60]!r}")
    found += [f"{where}:{node.lineno} branches on {node.value!r}"
              for node in _branch_constants(tree)
              if isinstance(node.value, str) and node.value.lower() in networks]
    return found


def _branch_constants(tree: ast.AST):
    """Constants compared with or used as dict keys: how code branches on a value."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            yield from (n for n in (node.left, *node.comparators) if isinstance(n, ast.Constant))
            for n in node.comparators:  # x in ("a", "b")
                if isinstance(n, (ast.Tuple, ast.List, ast.Set)):
                    yield from (e for e in n.elts if isinstance(e, ast.Constant))
        elif isinstance(node, ast.Dict):
            yield from (k for k in node.keys if isinstance(k, ast.Constant))


def outside_the_model_folders(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every module of the package but the model folders' and the registry."""
    models = package_dir / "core" / "models"
    return [p for p in sorted(package_dir.rglob("*.py"))
            if models not in p.parents and module_name(p) != REGISTRY]


def test_only_the_model_folders_and_the_registry_name_a_network():
    assert set(NETWORKS) >= {"hybridnets", "yolop"}, NETWORKS  # the scan found the folders
    found = [line for path in outside_the_model_folders() for line in network_mentions(path)]
    assert not found, ("a network imported or named outside core/models/<name>/ and "
                       "core/registry.py (use the adapter's properties):\n" + "\n".join(found))


def test_a_model_folder_imports_no_other():
    found = []
    for network in NETWORKS:
        own = f"hybridnets_ros.core.models.{network}"
        for path in (MODELS_DIR / network).rglob("*.py"):
            found += [f"{path.relative_to(PACKAGE_DIR)} imports {m}" for m in imports_of(path)
                      if m.startswith("hybridnets_ros.core.models.") and not m.startswith(own)]
    assert not found, "\n".join(found)
