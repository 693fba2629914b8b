"""``hybridnets download-weights``: the released checkpoint into the cache."""
from __future__ import annotations

from pathlib import Path

from ..core.weights import RELEASE_URL, WeightsError, default_weights_path, download_weights
from .common import CliError


def add_parser(sub) -> None:
    p = sub.add_parser("download-weights", help="download the released checkpoint into the cache")
    p.add_argument("--dest", help=f"where to save it (default {default_weights_path()})")
    p.add_argument("--url", help="download from another address")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=run)


def run(args) -> int:
    dest = Path(args.dest) if args.dest else default_weights_path()
    if dest.is_file() and not args.force:
        print(f"{dest} already exists (use --force to download again)")
        return 0
    try:
        path = download_weights(dest, url=args.url or RELEASE_URL)
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    print(f"saved {path}")
    return 0
