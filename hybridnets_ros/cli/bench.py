"""``hybridnets bench``: per-stage timings and fidelity for every available backend;
``--graph``: the node's throughput and latency as a ROS node (tools/bench_graph.py)."""
from __future__ import annotations

import argparse
import sys

from ..tools.bench import TORCH_VARIANTS, Variant, bench
from .common import (RANDOM_WEIGHTS_WARNING, USER_ERRORS, CliError, add_family_options,
                     add_setting_options, config_from_options)

GRAPH_ONLY = ("rates", "seconds", "no_search", "dds")


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
    p.add_argument("--frames", type=int, default=30,
                   help="timed frames per backend (default 30; --graph: distinct frames played)")
    p.add_argument("--source", metavar="DIR",
                   help="folder of images, with --graph also a bag (default: synthetic frames)")
    add_setting_options(p, "input_size", "int8_calibration", "weights", "device", defaults={
        "int8_calibration": "the source", "weights": "the downloaded one, else random",
        "device": "cpu"})
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--layers", action="store_true",
                   help="also profile each exact CPU engine (openvino, onnxruntime fp32) by layer "
                        "type: time, share, FLOPs and GFLOP/s of each")
    graph = p.add_argument_group(
        "the node in a graph (--graph)",
        "hybridnets_node in its own process, a player publishing the frames at fixed rates and "
        "a recorder of every output over DDS, as ros2_benchmark measures: the throughput (the "
        "highest input rate with under 5 % of the frames dropped on every output, searched) "
        "and the latency (image stamp to output arrival) at fixed rates, per output topic, "
        "for each --backend (default: the node's auto) under each DDS setting. --source may "
        "be a bag; --frames caps the distinct frames preloaded (docs/benchmarks.md)")
    graph.add_argument("--graph", action="store_true", help="measure the node in a ROS graph")
    graph.add_argument("--rates", type=_rates, help="fixed input rates in Hz (default 10,30)")
    graph.add_argument("--seconds", type=float, help="seconds per rate and probe (default 10)")
    graph.add_argument("--no-search", action="store_true", default=None,
                       help="skip the throughput search")
    graph.add_argument("--dds", type=_dds_settings,
                       help="DDS settings of the player and the recorder: shipped (the "
                            "project's Fast DDS profile), stock (none); default both")
    p.set_defaults(func=run)


def _rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(r) for r in text.split(",") if r.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of rates: {text!r}") from None
    if not rates or not all(0.1 <= r <= 1000 for r in rates):
        raise argparse.ArgumentTypeError(f"rates must be 0.1 to 1000 Hz, got {text!r}")
    return rates


def _dds_settings(text: str) -> tuple[str, ...]:
    from ..tools.bench_graph import DDS_SETTINGS
    chosen = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in chosen if s not in DDS_SETTINGS]
    if not chosen or unknown:
        raise argparse.ArgumentTypeError(f"choose from {', '.join(DDS_SETTINGS)}, got {text!r}")
    return chosen


def run(args) -> int:
    if args.frames < 1:
        raise CliError("--frames must be at least 1")
    if args.graph:
        if args.layers:
            raise CliError("--layers profiles the engines in process; leave out --graph")
        return run_graph(args)
    given = [f"--{name.replace('_', '-')}" for name in GRAPH_ONLY
             if getattr(args, name) is not None]
    if given:
        raise CliError(f"{', '.join(given)} only apply with --graph")
    try:
        variants = [Variant.parse(v.strip()) for spec in args.variants or () for v in spec.split(",")
                    if v.strip()]
    except ValueError as exc:
        raise CliError(str(exc)) from None
    config = config_from_options(args, device=args.device or "cpu")
    try:
        return bench(config, variants or None, args.source, args.frames, args.int8_calibration,
                     args.json, args.threads, args.layers)
    except (*USER_ERRORS, ValueError) as exc:
        raise CliError(str(exc)) from None


def run_graph(args) -> int:
    from ..pipeline.config import PRECISIONS, ConfigError, NodeConfig
    from ..pipeline.factory import resolve_weights
    from ..ros.resources import share_file
    from ..tools.bench_graph import GraphOptions, bench_graph, load_input

    if args.threads:
        raise CliError("--threads is not a node setting; --graph runs the node as it is")
    if args.seconds is not None and not 0.5 <= args.seconds <= 3600:
        raise CliError("--seconds must be 0.5 to 3600")
    variants = []
    for spec in args.variants or ("auto",):
        for text in filter(None, (v.strip() for v in spec.split(","))):
            name, _, precision = text.partition(":")
            if name in TORCH_VARIANTS:
                raise CliError(f"{name} is a bench variant, not a node backend; with --graph "
                               "choose auto or one of the node's backends")
            if name == "auto" and precision not in ("", *PRECISIONS):
                raise CliError(f"unknown precision {precision!r} in {text!r}; choose from "
                               f"{', '.join(PRECISIONS)}")
            if name != "auto":
                try:
                    Variant.parse(text)
                except ValueError as exc:
                    raise CliError(f"{exc} (or auto)") from None
            variants.append((name, precision or "fp32"))
    # The node's own defaults (config/hybridnets.yaml) with the options given.
    try:
        base = NodeConfig.from_params_file(share_file("config/hybridnets.yaml"))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    config = config_from_options(args, base=base)
    try:
        weights = resolve_weights(config.with_changes(allow_random_weights=True))
        graph_input = load_input(args.source, args.frames)
    except (*USER_ERRORS, ValueError) as exc:
        raise CliError(str(exc)) from None
    if weights is None:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    defaults = GraphOptions()
    options = GraphOptions(rates=args.rates or defaults.rates,
                           seconds=args.seconds or defaults.seconds,
                           search=not args.no_search, dds=args.dds or defaults.dds)
    return bench_graph(config, base, variants, graph_input, options, weights, args.json)
