"""The README's main job end to end, and the launch files' shape (test_launch*.py run them
under the real launch and launch_ros)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ros_graph  # noqa: F401  (isolated DDS domain + the shipped DDS profile for the demo)
from conftest import REPO


@pytest.mark.slow  # the demo graph: three processes over DDS
def test_demo_runs_the_graph_and_records_outputs(tmp_path, isolated_cache):
    out = tmp_path / "demo"
    env = {**os.environ, "HYBRIDNETS_CACHE": str(isolated_cache)}
    proc = subprocess.run([str(Path(sys.executable).parent / "hybridnets"), "demo", "--frames", "3",
                           "--rate", "1", "--output", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "RANDOM WEIGHTS" in proc.stderr  # offline here: the fallback is announced
    summary = json.loads((out / "summary.json").read_text())
    # Only the newest frame is sure to be processed: the node drops stale ones on purpose.
    assert summary["frames_published"] == 3 and summary["frames_with_results"] >= 1
    assert summary["node_exit_code"] == 0
    assert summary["node_diagnostics"]["state"] == "active"
    assert list(out.glob("overlay_*.jpg")) and list(out.glob("grids_*.png"))
    assert "processed by hybridnets_node" in proc.stdout


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _declared_arguments(tree: ast.AST) -> list[str]:
    return [c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")
            if c.args and isinstance(c.args[0], ast.Constant)]


@pytest.mark.parametrize("name", ["hybridnets.launch.py", "multi_camera.launch.py"])
def test_launch_files_start_a_lifecycle_node_with_the_shared_arguments(name):
    """Read from the source: the node is a launch_ros LifecycleNode, made in one place, and
    every argument the node takes is declared once."""
    from hybridnets_ros.pipeline.config import settings
    from hybridnets_ros.ros import launch_args

    tree = ast.parse((REPO / "launch" / name).read_text())
    assert not _calls(tree, "Node") and not _calls(tree, "LifecycleNode")
    assert _calls(tree, "hybridnets_node") and _calls(tree, "declare_node_arguments")
    own = _declared_arguments(tree)
    assert len(own) == len(set(own)) and not set(own) & {"config", *launch_args.NODE_ARGUMENTS}
    # the shared node action: a LifecycleNode with the name and namespace it requires
    shared = ast.parse(Path(launch_args.__file__).read_text())
    (node,) = _calls(shared, "LifecycleNode")
    keywords = {k.arg: k.value for k in node.keywords}
    assert {"package", "executable", "name", "namespace", "parameters"} <= set(keywords)
    assert "use_compressed" in launch_args.NODE_ARGUMENTS  # hybridnets.launch.py takes it too
    # every shared argument but use_sim_time (rclpy's own) is a node setting
    node_settings = {s.name for s in settings()}
    assert set(launch_args.NODE_ARGUMENTS) - {"use_sim_time"} <= node_settings


def test_config_declares_every_parameter():
    import yaml
    from hybridnets_ros.pipeline.config import settings
    config = yaml.safe_load((REPO / "config" / "hybridnets.yaml").read_text())
    assert set(config["/**"]["ros__parameters"]) == {s.name for s in settings()}
