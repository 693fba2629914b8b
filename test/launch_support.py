"""What the launch tests share: this checkout as an ament package, one cache, the launch files
included with them, small frames.

launch_testing runs a test file's launch outside pytest's fixtures, so the ament prefix and
the cache are made here, once per test process, and removed when it ends.
"""
from __future__ import annotations

import atexit
import functools
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "ament_prefix.py"
SIZE = (144, 256)  # small frames (height, width): at input_size 128 a quick network input
K = np.array([[200.0, 0, 128], [0, 200.0, 72], [0, 0, 1]])
STARTUP_S = 240.0  # a model load on a busy 2-core CI machine
PARAMS = "/**:\n  ros__parameters:\n    input_size: 128\n"  # every launched node's


def load_ament_prefix_script():
    spec = importlib.util.spec_from_file_location("ament_prefix_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def _work() -> Path:
    path = Path(tempfile.mkdtemp(prefix="hybridnets-launch-test-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


@functools.cache
def ament_prefix() -> Path:
    """This checkout as an ament package (scripts/ament_prefix.py, as scripts/bootstrap.sh makes
    the venv one): launch_ros finds the launch files, config and hybridnets_node under test,
    whatever the venv's own prefix holds."""
    prefix = _work() / "ament_prefix"
    assert load_ament_prefix_script().main(["--prefix", str(prefix)]) == 0
    return prefix


@functools.cache
def params_file() -> str:
    path = _work() / "params.yaml"
    path.write_text(PARAMS)
    return str(path)


@functools.cache
def weights() -> str:
    """Random weights as a checkpoint (the golden one where ../shared is): loading one takes
    a node a second, its own random initialisation (BatchNorm calibration) ten."""
    from conftest import GOLDEN
    golden = GOLDEN / "hybridnets_random_seed0.pth"
    if golden.is_file():
        return str(golden)
    import torch

    from hybridnets_ros.core.models.hybridnets.weights import load_module
    path = _work() / "random.pth"
    torch.save(load_module(random_weights=True).state_dict(), path)
    return str(path)


def environment() -> dict[str, str]:
    """What a launch of the tests sets: the checkout first on AMENT_PREFIX_PATH, and one cache
    for every launched node (never the user's)."""
    return {"AMENT_PREFIX_PATH": os.pathsep.join(
                filter(None, [str(ament_prefix()), os.environ.get("AMENT_PREFIX_PATH")])),
            "HYBRIDNETS_CACHE": str(_work() / "cache")}


def include(name: str, **arguments: str):
    """launch/``name`` with ``arguments``, in a group that scopes them and
    :func:`environment` (launch restores both once the group's actions, the node processes
    included, are started). onnxruntime: with the ONNX export in the shared cache, the backend
    that starts fastest (2 s of CPU against torch's 12 s of tracing and warm-up)."""
    from launch.actions import GroupAction, IncludeLaunchDescription, SetEnvironmentVariable
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    return GroupAction([
        *(SetEnvironmentVariable(k, v) for k, v in environment().items()),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(REPO / "launch" / name)),
            launch_arguments={"backend": "onnxruntime", "weights": weights(),
                              "config": params_file(), **arguments}.items()),
    ])


def frame(stamp: int):
    """A small random image and its CameraInfo, stamped ``stamp``."""
    import ros_graph as rg
    rng = np.random.default_rng(stamp % 1000)
    return (rg.image_msg(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8), stamp),
            rg.camera_info_msg(K, SIZE[1], SIZE[0], stamp))


def publish_until(publish, arrived, timeout: float = 120.0) -> int:
    """Publishes a frame (``publish(stamp)``) every half second until ``arrived(stamp)`` holds
    for one of them (the node drops frames that wait: not every one comes back); its stamp."""
    import time

    import ros_graph as rg
    stamps, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps.append(time.time_ns())
        publish(stamps[-1])
        if rg.wait_for(lambda: any(arrived(s) for s in stamps), 0.5):
            return next(s for s in stamps if arrived(s))
    raise AssertionError(f"no outputs for any of {len(stamps)} frames in {timeout} s")
