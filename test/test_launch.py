"""The launch files under the real launch and launch_ros (Jazzy releases, from
../shared/ros_tools): the nodes they start, with their namespaces and topics, resolved as
launch_ros resolves them; `hybridnets launch`; the venv as an ament prefix.
(test_launch_hybridnets.py and test_launch_multi_camera.py run the launch files.)"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO, need_modules

need_modules("launch", "launch_ros", "ros2launch", "launch_testing")

from launch import LaunchContext  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch_ros.actions import LifecycleNode, PushROSNamespace  # noqa: E402

import launch_support as ls  # noqa: E402


@pytest.fixture(autouse=True)
def ament_prefix(monkeypatch):
    """This checkout first on AMENT_PREFIX_PATH (the launch files' default config, the CLI)."""
    monkeypatch.setenv("AMENT_PREFIX_PATH", ls.environment()["AMENT_PREFIX_PATH"])


# --- The nodes the launch files start, resolved as launch_ros resolves them (no process) ---

def started_nodes(name: str, arguments: dict[str, str], pushed: str | None = None) -> dict:
    """Fully qualified node name -> remappings of the nodes launch file ``name`` starts with
    ``arguments``, under a PushROSNamespace(``pushed``) of an including launch file."""
    spec = importlib.util.spec_from_file_location("launch_file", REPO / "launch" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = LaunchContext()
    context.launch_configurations.update(arguments)
    if pushed is not None:
        PushROSNamespace(pushed).visit(context)
    entities, nodes = list(module.generate_launch_description().entities), {}
    while entities:
        entity = entities.pop(0)
        if isinstance(entity, LifecycleNode):
            entity._perform_substitutions(context)  # what its execute() does before starting it
            nodes[entity.node_name] = dict(entity.expanded_remapping_rules)
        else:
            assert isinstance(entity, (DeclareLaunchArgument, OpaqueFunction)), entity
            entities[:0] = entity.visit(context) or []
    return nodes


def camera_inputs(robot: str, names=("front", "left", "right"), prefixed=True) -> dict:
    """Remappings of the cameras' inputs (the node's names for them prefixed with the camera
    name when one node serves them all) to the robot's topics."""
    return {f"{n}/{topic}" if prefixed else topic: f"{robot}/{n}/{remote}"
            for n in names for topic, remote in (("image", "image_raw"),
                                                 ("image/compressed", "image_raw/compressed"),
                                                 ("camera_info", "camera_info"))}


@pytest.mark.parametrize("arguments, pushed, robot", [
    ({}, None, ""),  # the root: as documented, /front/image_raw
    ({"namespace": "robot1"}, None, "/robot1"),
    ({"namespace": "/robot1/"}, None, "/robot1"),
    ({}, "fleet", "/fleet"),  # an including launch file's PushROSNamespace
    ({"namespace": "robot1"}, "fleet", "/fleet/robot1"),
    ({"namespace": "/robot1"}, "fleet", "/robot1"),  # absolute: as ROS resolves it
])
def test_multi_camera_nodes_and_cameras_are_in_the_namespace(arguments, pushed, robot):
    nodes = started_nodes("multi_camera.launch.py", arguments, pushed)
    assert nodes == {f"{robot}/hybridnets/hybridnets_node": camera_inputs(robot)}


def test_multi_camera_one_process_per_camera_in_the_namespace():
    nodes = started_nodes("multi_camera.launch.py", {"namespace": "robot1", "cameras": "front,left",
                                                     "one_process_per_camera": "true"})
    assert nodes == {f"/robot1/{n}/hybridnets/hybridnets_node":
                     camera_inputs("/robot1", [n], prefixed=False) for n in ("front", "left")}


@pytest.mark.parametrize("arguments, pushed, node", [
    ({}, None, "/hybridnets_node"),
    ({"namespace": "front"}, None, "/front/hybridnets_node"),
    ({"namespace": "front"}, "robot1", "/robot1/front/hybridnets_node"),
])
def test_hybridnets_launch_node_in_the_namespace_with_relative_topics(arguments, pushed, node):
    nodes = started_nodes("hybridnets.launch.py", arguments, pushed)
    # relative names: rcl resolves them in the node's namespace (/front/image, ...)
    assert nodes == {node: {"image": "image", "image/compressed": "image/compressed",
                            "camera_info": "camera_info"}}


# --- `hybridnets launch` ---

def hybridnets(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "hybridnets"), *args],
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_hybridnets_launch_finds_the_package_files_and_reports_bad_words(monkeypatch, capsys):
    from hybridnets_ros.cli import main
    assert main(["launch", "multi_camera.launch.py", "--show-args"]) == 0
    assert "'namespace':" in capsys.readouterr().out
    assert main(["launch", "hybridnets_ros", "hybridnets.launch.py", "-s"]) == 0  # as ros2 launch
    assert "'autostart':" in capsys.readouterr().out
    for words, message in [(["nope.launch.py"], "'nope.launch.py' was not found"),
                           (["no/such/file.launch.py"], "no such launch file"),
                           (["hybridnets.launch.py", "image"], "malformed launch argument 'image'"),
                           (["no_package", "x.launch.py"], "package 'no_package' not found")]:
        assert main(["launch", *words]) == 2, words
        assert message in capsys.readouterr().err
    monkeypatch.delenv("AMENT_PREFIX_PATH")
    assert main(["launch", "hybridnets.launch.py"]) == 2
    assert "AMENT_PREFIX_PATH" in capsys.readouterr().err


@pytest.mark.slow  # subprocesses
def test_hybridnets_launch_exit_status_tells_how_its_processes_ended(tmp_path):
    script = tmp_path / "processes.launch.py"
    script.write_text("""
import sys
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration
# exits with status code:= at SIGINT (launch's shutdown) or at once with exit_now:=true
CHILD = '''
import signal, sys, time
code = int(sys.argv[1])
signal.signal(signal.SIGINT, lambda *_: sys.exit(code))
print("child ready", flush=True)
if sys.argv[2] == "true":
    sys.exit(code)
time.sleep(120)
'''
def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("code"), DeclareLaunchArgument("exit_now", default_value="false"),
        ExecuteProcess(cmd=[sys.executable, "-c", CHILD, LaunchConfiguration("code"),
                            LaunchConfiguration("exit_now")], output="screen", name="child"),
    ])
""")
    failed = hybridnets("launch", str(script), "code:=3", "exit_now:=true")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "failed: child-1 (exit status 3)" in failed.stderr

    for code, status in ((0, 0), (4, 1)):  # Ctrl-C: launch sends SIGINT on, waits for the exits
        # no terminal (as under a supervisor): launch passes the SIGINT on itself
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hybridnets"), "launch",
                                 str(script), f"code:={code}"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if "child ready" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == status, out


# --- Collection beside launch_testing's pytest plugin ---

@pytest.mark.slow  # a pytest process
def test_a_module_that_skips_at_import_skips_alone(tmp_path):
    """launch_testing's plugin imports every test module while collecting: one that skips
    there (a missing optional module) must not take the others with it (collect_guard.py)."""
    shutil.copy(REPO / "test" / "collect_guard.py", tmp_path / "conftest.py")
    (tmp_path / "test_a_skips.py").write_text(
        "import pytest\npytest.skip('not here', allow_module_level=True)\n")
    (tmp_path / "test_b_runs.py").write_text("def test_runs():\n    pass\n")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "CI"})
    assert "1 passed, 1 skipped" in proc.stdout, proc.stdout + proc.stderr
    assert "test_a_skips.py:2: not here" in proc.stdout


# --- The venv as an ament prefix (scripts/bootstrap.sh runs scripts/ament_prefix.py) ---

def test_the_package_reads_its_own_checkout_files_before_an_ament_prefix(tmp_path, monkeypatch):
    """A venv shared by several checkouts is the ament prefix of one of them: the code of
    another (on PYTHONPATH) still reads its own config."""
    from hybridnets_ros.ros.resources import share_file
    other = tmp_path / "other"
    (other / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (other / "share" / "ament_index" / "resource_index" / "packages" / "hybridnets_ros").touch()
    (other / "share" / "hybridnets_ros" / "config").mkdir(parents=True)
    (other / "share" / "hybridnets_ros" / "config" / "fastdds.xml").write_text("<other/>")
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(other))
    assert share_file("config/fastdds.xml") == REPO / "config" / "fastdds.xml"


@pytest.mark.slow  # a venv and its interpreters
def test_a_venv_is_an_ament_prefix_of_the_package_without_any_export(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True,
                               check=True).stdout.strip())
    # the project's packages (ament_index_python, ...) without its venv's start-up hooks
    (site / "project.pth").write_text(sysconfig.get_path("purelib") + "\n")
    env = {**{k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"},
           "PYTHONPATH": str(REPO)}
    for _ in range(2):  # idempotent
        subprocess.run([python, ls.SCRIPT], check=True, env=env, capture_output=True)
    check = ("import os; from ament_index_python.packages import get_package_share_directory as s,"
             " get_package_prefix as p; print(s('hybridnets_ros')); print(p('hybridnets_ros'));"
             " print(os.environ['AMENT_PREFIX_PATH'])")
    share, prefix, path = subprocess.run([python, "-c", check], env=env, capture_output=True,
                                         text=True, check=True).stdout.split()
    assert Path(prefix) == venv and path == str(venv)
    for name in ("launch/hybridnets.launch.py", "config/hybridnets.yaml", "package.xml"):
        assert (Path(share) / name).resolve() == REPO / name  # links: edits are live
    # where launch_ros' Node(package=, executable=) looks: the entry points of setup.py
    node = venv / "lib" / "hybridnets_ros" / "hybridnets_node"
    assert os.access(node, os.X_OK) and node.read_text().startswith(f"#!{python}\n")
    version = subprocess.run([venv / "lib" / "hybridnets_ros" / "hybridnets", "--version"],
                             env=env, capture_output=True, text=True, check=True).stdout
    assert version.startswith("hybridnets_ros ")
    # first on a path a sourced ROS distribution set, which the node's processes inherit
    other = {**env, "AMENT_PREFIX_PATH": f"/opt/ros/jazzy{os.pathsep}{venv}"}
    out = subprocess.run([python, "-c", "import os, subprocess, sys; sys.exit(subprocess.run("
                          "['env']).returncode)"], env=other, capture_output=True, text=True,
                         check=True).stdout
    assert f"AMENT_PREFIX_PATH={venv}{os.pathsep}/opt/ros/jazzy\n" in out
