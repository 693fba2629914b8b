"""``hybridnets fleet``: many bags, every camera, in this process or on a Ray cluster."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from ..pipeline.factory import resolve_device, resolve_weights
from ..tools.fleet import InProcessPool, find_bags, report_table, run_fleet, set_threads
from .common import (EXIT_DAMAGED, EXIT_FAILED, EXIT_OK, EXIT_STATUS_HELP, RANDOM_WEIGHTS_WARNING,
                     USER_ERRORS, CliError, add_bag_options, bag_config, pipeline_from_config,
                     topic_list)

# What to install for the fleet (setup.py's `fleet` extra, requirements-test.txt).
FLEET_PACKAGES = {"pyarrow": "pyarrow", "ray": "'ray[default]==2.60.*'"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fleet", help="many bags, every camera, through the pipeline (optionally on Ray)",
        description="Replays every camera of every bag as `hybridnets replay` does, into "
                    "DIR/<bag name>/ (an output bag, written under a temporary name and "
                    "renamed when complete), DIR/index.parquet (one row per image) and "
                    "DIR/summary.json. A rerun with the same --out skips complete bags and "
                    "redoes partial ones. A damaged bag is replayed as far as it can be read "
                    "(status damaged). Exit status 1 when a bag failed, else 3 when one was "
                    "damaged (docs/fleet.md).",
        epilog=EXIT_STATUS_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="bags, folders searched for bags (mcap, sqlite3, ROS 1) or text files "
                        "listing them, one per line")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="'local': start a Ray cluster on this machine; 'auto' or HOST:PORT: "
                        "join a running one (default: this process only, Ray not imported)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers, each with its own pipeline (default 1; more than one "
                        "needs Ray: without --ray, a local cluster is started)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per worker (default: the cores divided among workers)")
    p.add_argument("--image-topics", type=topic_list, metavar="T[,T...]",
                   help="only these image topics (default: every camera of each bag)")
    add_bag_options(p, weights_note="; every worker must see this path")
    p.add_argument("--size", type=int, help="letterbox target size (default: the params file's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise CliError("--workers and --threads must be at least 1")
    address = args.ray or ("local" if args.workers > 1 else None)
    needed = ["pyarrow"] + (["ray"] if address else [])
    lacking = [name for name in needed if importlib.util.find_spec(name) is None]
    if lacking:
        raise CliError(f"fleet needs {' and '.join(lacking)}: pip install "
                       f"{' '.join(FLEET_PACKAGES[name] for name in lacking)}")
    config = bag_config(args)
    paths = find_bags(args.inputs)
    if not paths:
        raise CliError(f"no bags found in {', '.join(args.inputs)}")
    try:
        device = resolve_device(config.device)
    except USER_ERRORS as exc:
        raise CliError(str(exc)) from None
    timing = {}

    def pool():
        if address is None:
            set_threads(args.threads)
            return InProcessPool(config, pipeline_from_config(config))
        try:  # the checks and banner of every command, before the workers load the weights
            if resolve_weights(config) is None:
                print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        except USER_ERRORS as exc:
            raise CliError(str(exc)) from None
        from ..tools import fleet_ray
        started_here, timing["ray start s"] = fleet_ray.connect(address)
        timing["started here"] = started_here
        import ray
        cpus = int(ray.cluster_resources().get("CPU", os.cpu_count() or 1))
        gpus = 1 if device.startswith("cuda") else 0
        threads = args.threads or max(1, cpus // args.workers)
        try:
            ray_pool = fleet_ray.RayPool(config, args.workers, threads, gpus)
        except Exception as exc:  # a worker's pipeline failed to build there
            raise CliError(f"the Ray workers could not start: {exc}") from None
        timing["workers ready s"] = ray_pool.ready_s
        return ray_pool

    def progress(total):
        return tqdm(total=total, unit="frame", file=sys.stderr, desc="fleet")

    print(f"hybridnets fleet: {len(paths)} bag{'s' if len(paths) != 1 else ''} -> {args.out}"
          f"{f' on Ray ({address}), {args.workers} workers' if address else ' in this process'}",
          file=sys.stderr)
    try:
        report = run_fleet(paths, Path(args.out), pool, image_topics=args.image_topics,
                           progress_factory=progress)
    finally:
        if timing.get("started here"):
            from ..tools import fleet_ray
            fleet_ray.shutdown()
    print(report_table(report))
    if "ray start s" in timing:
        print(f"ray: connected in {timing['ray start s']:.1f} s, workers ready (pipelines "
              f"built) {timing['workers ready s']:.1f} s later")
    return exit_status(report)


def exit_status(report) -> int:
    """A failed bag outweighs a damaged one (read in part), which outweighs none."""
    return EXIT_FAILED if report.failed else EXIT_DAMAGED if report.damaged else EXIT_OK
