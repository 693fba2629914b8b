"""``hybridnets download-weights``: a network's released checkpoint into the cache."""
from __future__ import annotations

from pathlib import Path

from ..core.registry import ADAPTERS, DEFAULT_MODEL
from ..core.weights import WeightsError
from .common import CliError


def add_parser(sub) -> None:
    fetchable = ", ".join(a.name for a in ADAPTERS.values() if a.downloadable)
    p = sub.add_parser("download-weights", help="download a network's released checkpoint into "
                       "the cache", description=f"Networks with a public checkpoint: {fetchable}.")
    p.add_argument("--model", choices=tuple(ADAPTERS), default=DEFAULT_MODEL,
                   help=f"whose checkpoint (default {DEFAULT_MODEL})")
    p.add_argument("--dest", help="where to save it (default: the cache, where the node looks)")
    p.add_argument("--url", help="download from another address")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=run)


def run(args) -> int:
    adapter = ADAPTERS[args.model]
    dest = Path(args.dest) if args.dest else adapter.cached_weights()
    if dest.is_file() and not args.force:
        print(f"{dest} already exists (use --force to download again)")
        return 0
    try:
        path = adapter.download_weights(dest, url=args.url or "")
    except WeightsError as exc:
        raise CliError(str(exc)) from None
    print(f"saved {path}")
    return 0
