#!/usr/bin/env bash
# Creates/updates the project's virtual environment at .venv (idempotent; a no-op taking
# well under a second when nothing changed).
#   scripts/bootstrap.sh          run-time dependencies
#   scripts/bootstrap.sh --test   plus the test dependencies, and the ROS tools the tests
#                                 drive the package with (launch, launch_ros, launch_testing,
#                                 bondpy, ...: not on the package index) from ../shared/ros_tools
# Either way the venv becomes an ament prefix of the package (scripts/ament_prefix.py), so that
# launch_ros finds it as in a colcon install space.
# Environment: PYTHON (default python3) creates the venv; HYBRIDNETS_SHARED (default ../shared,
# as for the tests) holds ros_tools/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
PY=${PYTHON:-python3}
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
ROS_TOOLS="${HYBRIDNETS_SHARED:-../shared}/ros_tools"

say() { echo "[bootstrap] $*"; }

if [[ $WITH_TEST == 1 && ! -f $ROS_TOOLS/install.sh ]]; then
    say "$ROS_TOOLS not found: the ROS launch tools (launch, launch_ros, launch_testing, bondpy," \
        "...; not on the package index) cannot be installed from it; the tests that need them" \
        "skip where they are missing (with CI set they fail). Put the shared folder beside the" \
        "repository or set HYBRIDNETS_SHARED."
fi

inputs=(requirements.txt setup.py setup.cfg scripts/bootstrap.sh scripts/build_ros_interfaces.sh
        scripts/detect_platform.py scripts/ament_prefix.py
        $(find msg cmake -type f | LC_ALL=C sort))
[[ $WITH_TEST == 1 ]] && inputs+=(requirements-test.txt)
stamp="$VENV/.bootstrap-$WITH_TEST"
digest=$( { cat "${inputs[@]}"
            # the names of the files the venv's ament prefix links to (their edits are live)
            find launch config -maxdepth 1 -type f | LC_ALL=C sort
            if [[ $WITH_TEST == 1 && -f $ROS_TOOLS/install.sh ]]; then
                (cd "$ROS_TOOLS" && find . -type f ! -name '*.pyc' -print0 | LC_ALL=C sort -z \
                    | xargs -0 sha256sum)
            fi; } | sha256sum | cut -d' ' -f1)
if [[ -x $VENV/bin/python && -f $stamp && "$(cat "$stamp")" == "$digest" ]]; then
    exit 0
fi

# Jetson with JetPack: JetPack's CUDA PyTorch and TensorRT through system site packages,
# never the package index's torch; elsewhere a system torch is kept the same way.
# (scripts/detect_platform.py says what it found; test/test_detect_platform.py covers it.)
eval "$("$PY" scripts/detect_platform.py)"
if [[ $REFUSE == 1 ]]; then
    say "stopping: see above"
    exit 1
fi
if [[ ! -x $VENV/bin/python ]]; then
    if [[ $SYSTEM_SITE == 1 ]]; then
        say "creating $VENV with $("$PY" --version) and system site packages"
        "$PY" -m venv --system-site-packages "$VENV"
    else
        say "creating $VENV with $("$PY" --version)"
        "$PY" -m venv "$VENV"
    fi
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if [[ $INSTALL_TORCH == 1 ]] && ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    say "installing torch==2.13.0"
    # A local wheel (find-links) first; without one, a CPU-only machine gets PyTorch's CPU
    # build rather than the default PyPI wheel with gigabytes of CUDA libraries.
    if "${PIP[@]}" install -q --no-index --no-deps torch==2.13.0 2>/dev/null; then
        "${PIP[@]}" install -q torch==2.13.0  # its dependencies, from the package index
    else
        if command -v nvidia-smi >/dev/null 2>&1 || [[ -e /dev/nvidia0 ]]; then
            "${PIP[@]}" install -q torch==2.13.0
        else
            "${PIP[@]}" install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
        fi
    fi
fi

say "installing Python dependencies"
reqs=(-r requirements.txt)
[[ $WITH_TEST == 1 ]] && reqs+=(-r requirements-test.txt)
"${PIP[@]}" install -q "${reqs[@]}"
"${PIP[@]}" install -q --no-deps -e .

# ROS 2 Kilted wheels (rclpy over Fast DDS, message packages) and vision_msgs built from
# msg/ (not on the package index); a no-op when already done.
bash scripts/build_ros_interfaces.sh "$VENV"

# The real launch tools for the tests (idempotent: a stamp in the venv; needs the wheels above).
if [[ $WITH_TEST == 1 && -f $ROS_TOOLS/install.sh ]]; then
    bash "$ROS_TOOLS/install.sh" "$VENV" cmake/drop_missing_imported_includes.cmake
fi

# What colcon would install (ament index marker, share/hybridnets_ros linked to this checkout,
# lib/hybridnets_ros/ executables), and a .pth that puts the venv on AMENT_PREFIX_PATH.
"$VENV/bin/python" scripts/ament_prefix.py

echo "$digest" > "$stamp"
say "ready: $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
