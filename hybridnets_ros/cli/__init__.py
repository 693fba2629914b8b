"""``hybridnets`` command line: everything a user does outside ROS, one module per command."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from . import bench, demo, download_weights, export, fleet, infer, make_bag, replay
from .common import EXIT_INTERRUPTED, EXIT_STATUS_HELP, CliError

COMMANDS = (infer, download_weights, demo, export, bench, replay, make_bag, fleet)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridnets", description=__doc__,
                                     epilog=EXIT_STATUS_HELP)
    parser.add_argument("--version", action="version", version=f"hybridnets_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
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
