"""``hybridnets`` command line: everything a user does outside ROS, one module per command."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from .status import EXIT_INTERRUPTED, EXIT_STATUS_HELP, CliError

# One module per command, imported when its parser is made: most load torch and the
# network's libraries, which `hybridnets launch` (running as long as the robot does) needs not.
COMMANDS = ("infer", "download_weights", "demo", "export", "bench", "replay", "make_bag", "fleet",
            "road_geometry", "launch")


def make_parser(commands: Sequence[str] = COMMANDS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridnets", description=__doc__,
                                     epilog=EXIT_STATUS_HELP)
    parser.add_argument("--version", action="version", version=f"hybridnets_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in commands:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command is the first word that is not an option (the global options take no value)
    command = next((word for word in argv if not word.startswith("-")), None)
    args = make_parser([command] if command == "launch" else COMMANDS).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CliError as exc:
        print(f"hybridnets {args.command}: error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
