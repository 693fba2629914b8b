"""``hybridnets fleet``: an archive of bags, every camera, in this process or on a Ray cluster."""
from __future__ import annotations

import importlib.util
import signal
import sys
import threading
from pathlib import Path

from ..pipeline.factory import resolve_device, resolve_weights
from ..tools.fleet import (DEFAULT_RANGE_S, FleetError, InProcessPool, OutLocked,
                           check_outputs, find_bags, report_table, run_fleet, set_threads)
from .common import (EXIT_BUSY, EXIT_DAMAGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                     EXIT_STATUS_HELP, EXIT_USAGE, RANDOM_WEIGHTS_WARNING, USER_ERRORS, CliError,
                     add_bag_options, bag_config, pipeline_from_config, topic_list)

# What to install for the fleet (setup.py's `fleet` extra, requirements-test.txt).
FLEET_PACKAGES = {"pyarrow": "pyarrow", "ray": "'ray[default]==2.60.*'"}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "fleet", help="an archive of bags, every camera, through the pipeline (optionally on Ray)",
        description="Replays every camera of every bag as `hybridnets replay` does, in time "
                    "ranges, into DIR: frames/ (one row per image) and detections/ (one row "
                    "per detection), Parquet datasets covering every bag done under DIR by "
                    "any run, bags/<bag>/ (--outputs) and summary.json. A bag is named by its "
                    "path under --root. A rerun skips complete bags and ranges; one run per "
                    "DIR at a time. A damaged bag is replayed as far as it can be read "
                    "(status damaged). docs/fleet.md.",
        epilog=EXIT_STATUS_HELP)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="bags, folders searched for bags (mcap, sqlite3, ROS 1) or text files "
                        "listing them, one per line")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created; inside the inputs it is not searched)")
    p.add_argument("--root", metavar="DIR",
                   help="the archive root: a bag is named by its path under it (default: the "
                        "root DIR was first run with, else / so the absolute path)")
    p.add_argument("--outputs", type=topic_list, default=["bags"], metavar="O[,O...]",
                   help="what to write beside the index: 'index' (nothing more), 'bags' (what "
                        "a deployed node publishes: detections, masks, grids; default), 'all' "
                        "(with the overlay and colour segmentation) or output names; images "
                        "as CompressedImage (masks PNG, overlay JPEG)")
    p.add_argument("--range-minutes", type=float, default=DEFAULT_RANGE_S / 60, metavar="M",
                   help="work unit: a longer bag is done in ranges of at most M minutes, each "
                        "after a few seconds of tracking warm-up (default %(default)g)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="'local': start a Ray cluster on this machine; 'auto' or HOST:PORT: "
                        "join a running one (default: this process only, Ray not imported)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers, each with its own pipeline (default 1; more than one "
                        "needs Ray: without --ray, a local cluster is started)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per worker (default: the most that places every worker "
                        "on the cluster's nodes)")
    p.add_argument("--image-topics", type=topic_list, metavar="T[,T...]",
                   help="only these image topics (default: each image topic with a CameraInfo "
                        "beside it)")
    add_bag_options(p, weights_note="; every worker must see this path")
    p.add_argument("--size", type=int, help="letterbox target size (default: the params file's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        raise CliError("--workers and --threads must be at least 1")
    if not args.range_minutes > 0:
        raise CliError("--range-minutes must be positive")
    try:
        check_outputs(args.outputs)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    address = args.ray or ("local" if args.workers > 1 else None)
    needed = ["pyarrow"] + (["ray"] if address else [])
    lacking = [name for name in needed if importlib.util.find_spec(name) is None]
    if lacking:
        raise CliError(f"fleet needs {' and '.join(lacking)}: pip install "
                       f"{' '.join(FLEET_PACKAGES[name] for name in lacking)}")
    config = bag_config(args)
    out = Path(args.out)
    paths, notes = find_bags(args.inputs, exclude=out)
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
        gpus = 1 if device.startswith("cuda") else 0
        try:  # every worker placeable, or an error now rather than a wait for ever
            threads = fleet_ray.plan_workers(fleet_ray.cluster_nodes(), args.workers,
                                             args.threads, gpus)
        except FleetError as exc:
            raise CliError(str(exc)) from None
        try:
            ray_pool = fleet_ray.RayPool(config, args.workers, threads, gpus)
        except Exception as exc:  # a worker's pipeline failed to build there
            raise CliError(f"the Ray workers could not start: {exc}") from None
        timing["threads"], timing["workers ready s"] = threads, ray_pool.ready_s
        return ray_pool

    def progress(total):
        return tqdm(total=total, unit="frame", file=sys.stderr, desc="fleet")

    print(f"hybridnets fleet: {len(paths)} bag{'s' if len(paths) != 1 else ''} -> {args.out}"
          f"{f' on Ray ({address}), {args.workers} workers' if address else ' in this process'}",
          file=sys.stderr)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # a scheduler's stop, as Ctrl-C: the summary is written
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run_fleet(paths, out, pool, root=args.root, image_topics=args.image_topics,
                           outputs=args.outputs, range_s=args.range_minutes * 60,
                           progress_factory=progress, notes=notes)
    except OutLocked as exc:
        print(f"hybridnets fleet: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except FleetError as exc:
        raise CliError(str(exc)) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if timing.get("started here"):
            from ..tools import fleet_ray
            fleet_ray.shutdown()
    print(report_table(report))
    if "workers ready s" in timing:
        print(f"ray: connected in {timing['ray start s']:.1f} s, {args.workers} workers of "
              f"{timing['threads']} threads ready (pipelines built) "
              f"{timing['workers ready s']:.1f} s later")
    return exit_status(report)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def exit_status(report) -> int:
    """Interrupted, then stopped (--out cannot take more), then a failed bag, then a
    damaged one (read in part), then none."""
    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.stopped:
        return EXIT_USAGE
    return EXIT_FAILED if report.failed else EXIT_DAMAGED if report.damaged else EXIT_OK

