"""``hybridnets demo``: the ROS 2 graph (player -> hybridnets_node -> recorder)."""
from __future__ import annotations

import itertools
import logging
import sys
from pathlib import Path

from ..core.adapter import ModelAdapter
from ..core.registry import ADAPTERS, DEFAULT_MODEL
from ..core.weights import WeightsError
from .common import RANDOM_WEIGHTS_WARNING, CliError
from .sources import frames_of, sources_or_fail

log = logging.getLogger("hybridnets")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the ROS 2 graph on the built-in synthetic drive",
        description="A player publishes frames with their CameraInfo, hybridnets_node (its own "
                    "process) processes them and a recorder writes overlays, bird's-eye grids "
                    "and a summary with rates and latencies. Uses the model's downloaded "
                    "weights; tries to download them if missing and falls back to random "
                    "weights when offline or when the model has no public checkpoint.")
    p.add_argument("--model", choices=tuple(ADAPTERS), default=DEFAULT_MODEL,
                   help=f"the network (default {DEFAULT_MODEL}; docs/models.md)")
    p.add_argument("--params-file", metavar="YAML",
                   help="node parameters (default: the node's defaults for --model)")
    p.add_argument("--output", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--frames", type=int, default=8, help="number of frames (default 8)")
    p.add_argument("--rate", type=float, default=1.5, help="publish rate in Hz (default 1.5)")
    p.add_argument("--source", help="a folder of images, a video or a bag instead of the synthetic drive")
    p.add_argument("--camera-info", metavar="YAML",
                   help="calibration of --source (camera_calibration_parsers YAML); without it "
                        "no grids are published")
    p.set_defaults(func=run)


def demo_weights(adapter: ModelAdapter) -> Path | None:
    """The network's downloaded weights, else try to download them; None (random) when
    that fails."""
    path = adapter.cached_weights()
    if path.is_file():
        return path
    log.info("no weights at %s: trying to download them", path)
    try:
        return adapter.download_weights(path, timeout=15.0)
    except WeightsError as exc:
        log.warning("%s", exc)
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return None


def run(args) -> int:
    from ..core.synthetic import SyntheticRoad, default_camera
    from ..ros.camera_info import camera_info_from_model, camera_info_from_yaml
    from ..tools.bags import BagError, is_bag
    from ..tools.demo import run_demo
    from ..tools.replay import frames_from_bag

    if args.frames < 1 or args.rate <= 0:
        raise CliError("--frames must be >= 1 and --rate > 0")
    frame_id = "camera_optical_frame"
    if args.source and is_bag(args.source):
        try:
            camera_info, frames = frames_from_bag(Path(args.source))
        except BagError as exc:
            raise CliError(str(exc)) from None
        if camera_info is not None:
            camera_info.header.frame_id = frame_id
        frames = itertools.islice(frames, args.frames)
    elif args.source:
        sources, errors = sources_or_fail(args.source)
        frames = itertools.islice(frames_of(sources), args.frames)
        try:
            camera_info = camera_info_from_yaml(args.camera_info, frame_id) if args.camera_info else None
        except ValueError as exc:
            raise CliError(str(exc)) from None
    else:
        scene = SyntheticRoad(default_camera())
        frames = (scene.render(i / args.rate)[0] for i in range(args.frames))
        camera_info = camera_info_from_model(scene.camera, frame_id)
    weights = demo_weights(ADAPTERS[args.model])
    output = Path(args.output)
    params_file = Path(args.params_file) if args.params_file else None
    try:
        summary = run_demo(frames, camera_info, output, args.model, weights, params_file,
                           rate_hz=args.rate,
                           log=lambda text: log.info("%s", text))
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    latency = summary["end_to_end_latency_ms"]
    diag = summary["node_diagnostics"]
    print(f"hybridnets demo: {summary['frames_with_results']}/{summary['frames_published']} frames "
          f"processed by hybridnets_node ({diag.get('backend', '?')}), end-to-end latency median "
          f"{latency['median'] or float('nan'):.0f} ms, p95 {latency['p95'] or float('nan'):.0f} ms, "
          f"dropped {diag.get('frames_dropped', '?')}; {len(summary['files'])} pictures and "
          f"summary.json in {output}")
    if summary["random_weights"]:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    return 0 if summary["frames_with_results"] else 1
