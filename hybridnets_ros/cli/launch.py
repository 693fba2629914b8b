"""``hybridnets launch``: a launch file run from the venv as ``ros2 launch`` runs it in a ROS
workspace (ros2cli, which provides ``ros2``, is not installable into the venv).

It runs launch's LaunchService on the file, as ros2launch does, and exits 1 when a process
it started ended with an error (``ros2 launch`` exits 0 then): a node that crashed, or one
that launch had to escalate to SIGTERM or SIGKILL after Ctrl-C.
"""
from __future__ import annotations

import os
import sys

from .status import EXIT_FAILED, EXIT_OK, CliError

PACKAGE = "hybridnets_ros"
MISSING = ("launch and ros2launch are not installed: a ROS workspace has them (rosdep); the "
           "project's venv gets them with `make test` (scripts/bootstrap.sh --test, from "
           "../shared/ros_tools)")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "launch", help="run a launch file (ros2 launch, from the venv)",
        description="Run a launch file: a path, or the name of one of a package's launch "
                    f"files (by default {PACKAGE}'s: hybridnets.launch.py, "
                    "multi_camera.launch.py), with NAME:=VALUE launch arguments. "
                    f"`hybridnets launch {PACKAGE} hybridnets.launch.py image:=/camera/image_raw` "
                    "is `ros2 launch` with the same words. Ctrl-C stops every process it started.")
    p.add_argument("file", metavar="[PACKAGE] FILE",
                   help="the launch file (after the package it is in, if not hybridnets_ros)")
    p.add_argument("arguments", nargs="*", metavar="NAME:=VALUE", help="launch arguments")
    p.add_argument("-s", "--show-args", action="store_true",
                   help="list the launch file's arguments and exit")
    p.add_argument("-d", "--debug", action="store_true", help="launch's debug output")
    p.add_argument("-n", "--noninteractive", action="store_true",
                   default=not (sys.stdin and sys.stdin.isatty()),
                   help="no terminal: send SIGINT to the processes itself (default when stdin "
                        "is not a terminal, as ros2 launch)")
    p.set_defaults(func=run)


def resolve(target: list[str]) -> tuple[str, list[str]]:
    """The launch file's path and the launch arguments, from ``[PACKAGE] FILE [ARGS]``."""
    from ament_index_python.packages import PackageNotFoundError
    from ros2launch.api import (MultipleLaunchFilesError, get_share_file_path_from_package,
                                is_launch_file)

    first, rest = target[0], target[1:]
    if os.path.isfile(first):
        return first, rest
    if os.sep in first:
        raise CliError(f"no such launch file: {first}")
    is_package = rest and ":=" not in rest[0] and not first.endswith(is_launch_file.extensions)
    package, name = (first, rest.pop(0)) if is_package else (PACKAGE, first)
    try:
        return get_share_file_path_from_package(package_name=package, file_name=name), rest
    except (PackageNotFoundError, ValueError, OSError) as exc:  # OSError: no AMENT_PREFIX_PATH
        raise CliError(f"package {package!r} not found ({exc}) on AMENT_PREFIX_PATH="
                       f"{os.environ.get('AMENT_PREFIX_PATH', '')!r}: in a ROS workspace, source "
                       "its install/setup.bash; the project's venv has it from "
                       "scripts/bootstrap.sh") from None
    except (FileNotFoundError, MultipleLaunchFilesError) as exc:
        raise CliError(str(exc)) from None


def run(args) -> int:
    try:
        from launch import LaunchDescription, LaunchService
        from launch.actions import IncludeLaunchDescription, RegisterEventHandler
        from launch.event_handlers import OnProcessExit
        from launch.launch_description_sources import AnyLaunchDescriptionSource
        from ros2launch.api import print_arguments_of_launch_file
        from ros2launch.api.api import parse_launch_arguments
    except ModuleNotFoundError as exc:
        raise CliError(f"{MISSING} ({exc})") from None
    path, arguments = resolve([args.file, *args.arguments])
    try:
        parsed = parse_launch_arguments(arguments)
    except RuntimeError as exc:  # ros2launch's word for a malformed NAME:=VALUE
        raise CliError(str(exc)) from None
    if args.show_args:
        print_arguments_of_launch_file(launch_file_path=path)
        return EXIT_OK
    failed: list[str] = []

    def on_exit(event, _context):
        if event.returncode:
            failed.append(f"{event.action.name} (exit status {event.returncode})")

    service = LaunchService(argv=arguments, noninteractive=args.noninteractive, debug=args.debug)
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=on_exit)),
        IncludeLaunchDescription(AnyLaunchDescriptionSource(path), launch_arguments=parsed),
    ]))
    status = service.run()
    if failed:
        print(f"hybridnets launch: failed: {', '.join(failed)}", file=sys.stderr)
        return EXIT_FAILED
    return status
