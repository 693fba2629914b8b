"""``hybridnets bench``: per-stage timings and fidelity for every available backend."""
from __future__ import annotations

from ..tools.bench import Variant, bench
from .common import USER_ERRORS, CliError, add_family_options, config_from_options


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the pipeline per stage for every available backend",
                       description="Median and p95 ms per stage, end to end and frames per "
                                   "second on real frames, plus the fidelity of each backend "
                                   "to the first fp32 one. Random weights unless --weights or "
                                   "a downloaded checkpoint.")
    p.add_argument("--backend", action="append", dest="variants", metavar="NAME[:PRECISION]",
                   help="torch-eager, torch, torch-cudagraph, onnxruntime, openvino, tensorrt, torch2trt; "
                        "repeat or comma-separate (default: every one available)")
    add_family_options(p)
    p.add_argument("--size", type=int, help="letterbox target size (default 640)")
    p.add_argument("--frames", type=int, default=30, help="timed frames per backend (default 30)")
    p.add_argument("--source", metavar="DIR", help="folder of images (default: synthetic frames)")
    p.add_argument("--calib", metavar="DIR", help="INT8 calibration images (default: the source)")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: downloaded or random)")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.frames < 1:
        raise CliError("--frames must be at least 1")
    try:
        variants = [Variant.parse(v.strip()) for spec in args.variants or () for v in spec.split(",")
                    if v.strip()]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = config_from_options(args, device=args.device or "cpu")
    try:
        return bench(config, variants or None, args.source, args.frames, args.calib, args.json,
                     args.threads)
    except (*USER_ERRORS, ValueError) as exc:
        raise CliError(str(exc)) from None
