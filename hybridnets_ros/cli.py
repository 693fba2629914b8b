"""``hybridnets`` command line: everything a user does outside ROS."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .weights import WeightsError, default_weights_path

log = logging.getLogger("hybridnets")

RANDOM_WEIGHTS_WARNING = (
    "\n"
    "!!! RANDOM WEIGHTS: the network is randomly initialised, so its boxes and masks are\n"
    "!!! meaningless. This run only shows the pipeline working end to end. Get the real\n"
    "!!! checkpoint with `hybridnets download-weights` or pass --weights PATH.\n")


class CliError(Exception):
    """A problem with the command line or set-up; printed without a trace, exit code 2."""


def resolve_weights(weights: str | None, random_weights: bool) -> Path | None:
    """The checkpoint to use: --weights, else the downloaded one; None means random."""
    if weights:
        return Path(weights)
    cached = default_weights_path()
    if cached.is_file():
        log.info("using downloaded weights %s", cached)
        return cached
    if random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return None
    raise CliError(f"no weights: pass --weights PATH, run `hybridnets download-weights` (saves to "
                   f"{cached}), or add --random-weights to check the pipeline with meaningless outputs")


def build_pipeline(args, weights: Path | None):
    from .backends import BackendUnavailable, create_backend
    from .pipeline import Pipeline
    from .weights import build_model

    try:
        model = build_model(weights, random_weights=weights is None)
        backend = create_backend(args.backend, model, device=args.device,
                                 precision=args.precision, calib=args.calib, input_size=args.size)
        return Pipeline(backend, args.size, args.conf, args.iou)
    except (WeightsError, BackendUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from None


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="PATH",
                   help=f"HybridNets checkpoint (default: {default_weights_path()} if downloaded)")
    p.add_argument("--random-weights", action="store_true",
                   help="run with random weights when no checkpoint is found (meaningless outputs)")
    p.add_argument("--size", type=int, default=640, help="letterbox target size (default 640)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold (default 0.25)")
    p.add_argument("--iou", type=float, default=0.3, help="NMS IoU threshold (default 0.3)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--backend", default="auto",
                   choices=("auto", "torch", "onnxruntime", "tensorrt", "torch2trt"),
                   help="inference engine (default auto: the best one available, logged)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"),
                   help="fp16: CUDA only; int8: onnxruntime (CPU), tensorrt, torch2trt, needs "
                        "--calib (default fp32)")
    p.add_argument("--calib", metavar="DIR",
                   help="INT8 calibration images, frames like the camera's (6-32 are enough)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hybridnets", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hybridnets_ros {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("infer", help="detect and segment images, folders and videos",
                       description="Write an annotated overlay per image (and an annotated video "
                                   "per video) to the output folder.")
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders or videos")
    _add_model_options(p)
    p.add_argument("--output", default="out/infer", help="output folder (default out/infer)")
    p.add_argument("--save-npz", action="store_true",
                   help="also write <stem>.npz with det_boxes_xyxy, det_scores, det_classes, seg_mask")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("download-weights", help="download the released checkpoint into the cache")
    p.add_argument("--dest", help=f"where to save it (default {default_weights_path()})")
    p.add_argument("--url", help="download from another address")
    p.add_argument("--force", action="store_true", help="download again even if present")
    p.set_defaults(func=cmd_download_weights)

    p = sub.add_parser(
        "demo", help="run the ROS 2 graph on the built-in synthetic drive",
        description="A player publishes frames with their CameraInfo, hybridnets_node (its own "
                    "process) processes them and a recorder writes overlays, bird's-eye grids "
                    "and a summary with rates and latencies. Uses the downloaded weights; tries "
                    "to download them if missing and falls back to random weights when offline.")
    p.add_argument("--output", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--frames", type=int, default=8, help="number of frames (default 8)")
    p.add_argument("--rate", type=float, default=1.5, help="publish rate in Hz (default 1.5)")
    p.add_argument("--source", help="a folder of images, a video or a bag instead of the synthetic drive")
    p.add_argument("--camera-info", metavar="YAML",
                   help="calibration of --source (camera_calibration_parsers YAML); without it "
                        "no grids are published")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("export", help="export ONNX or build a TensorRT engine ahead of time",
                       description="ONNX (opset 17, static shape for the camera resolution and "
                                   "--size, checked against PyTorch) or a TensorRT / torch2trt "
                                   "engine, built into the cache the runtime loads from.")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: the downloaded one)")
    p.add_argument("--random-weights", action="store_true", help="random weights (for testing)")
    p.add_argument("--format", default="onnx", choices=("onnx", "engine", "torch2trt"),
                   help="onnx, engine (TensorRT from the ONNX export) or torch2trt (default onnx)")
    p.add_argument("--size", type=int, default=640, help="letterbox target size (default 640)")
    p.add_argument("--camera", default="1280x720", metavar="WxH",
                   help="camera resolution; with --size it fixes the input shape (default 1280x720)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="fp16 engine (engine formats)")
    precision.add_argument("--int8", action="store_true", help="INT8, calibrated on --calib DIR")
    p.add_argument("--calib", metavar="DIR", help="INT8 calibration images")
    p.add_argument("--device", default="cuda", help="GPU for engine formats (default cuda)")
    p.add_argument("--output", metavar="PATH",
                   help="also copy the result here (default for onnx: hybridnets_HxW.onnx)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="time the pipeline per stage for every available backend",
                       description="Median and p95 ms per stage, end to end and frames per "
                                   "second on real frames, plus the fidelity of each backend "
                                   "to the first fp32 one. Random weights unless --weights or "
                                   "a downloaded checkpoint.")
    p.add_argument("--backend", action="append", metavar="NAME[:PRECISION]",
                   help="torch-eager, torch, torch-cudagraph, onnxruntime, tensorrt, torch2trt; "
                        "repeat or comma-separate (default: every one available)")
    p.add_argument("--size", type=int, default=640, help="letterbox target size (default 640)")
    p.add_argument("--frames", type=int, default=30, help="timed frames per backend (default 30)")
    p.add_argument("--source", metavar="DIR", help="folder of images (default: synthetic frames)")
    p.add_argument("--calib", metavar="DIR", help="INT8 calibration images (default: the source)")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: downloaded or random)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "replay", help="run a bag's camera images through the pipeline into a new bag",
        description="Reads a ROS 2 (mcap, sqlite3) or ROS 1 bag, runs every image through the "
                    "node's pipeline and writes the node's outputs (detections, masks, grids "
                    "when the bag has camera_info, overlay) to a new bag, each stamped like its "
                    "image and recorded at the image's bag time. Ctrl-C keeps a valid bag.")
    p.add_argument("in_bag", metavar="IN_BAG", help="bag folder or .mcap/.db3/.bag file")
    p.add_argument("--out", required=True, metavar="OUT_BAG", help="output bag (must not exist)")
    p.add_argument("--image-topic", help="Image or CompressedImage topic (default: the only one)")
    p.add_argument("--camera-info-topic", help="CameraInfo topic (default: the one beside the images)")
    p.add_argument("--params-file", metavar="YAML",
                   help="node parameters: thresholds, camera_pose, grid (default config/hybridnets.yaml)")
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: the downloaded one)")
    p.add_argument("--random-weights", action="store_true",
                   help="run with random weights when no checkpoint is found (meaningless outputs)")
    p.add_argument("--backend", help="inference engine (default: the params file's, auto)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    p.add_argument("--keep-input", action="store_true", help="copy the input bag's topics too")
    p.add_argument("--video", metavar="FILE", help="also write the overlay beside the grids as MP4")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                   help="output storage (default mcap)")
    p.add_argument("--namespace", default="", help="prefix of the output topics (default none)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("make-bag", help="turn images or a video into a bag to replay",
                       description="Writes /camera/image_raw (or /camera/image_raw/compressed) "
                                   "and, with --camera-info, /camera/camera_info.")
    p.add_argument("source", metavar="SOURCE", help="folder of images or a video file")
    p.add_argument("--out", required=True, metavar="BAG", help="output bag (must not exist)")
    p.add_argument("--rate", type=float, help="frames per second (default: the video's, else 10)")
    p.add_argument("--camera-info", metavar="YAML", help="calibration (camera_calibration_parsers YAML)")
    p.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of Image")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"), help="default mcap")
    p.set_defaults(func=cmd_make_bag)
    return parser


class _Outputs:
    """Output file names: <stem>.<ext>, with a numeric suffix if a stem repeats."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.used: set[str] = set()

    def stem(self, wanted: str) -> str:
        stem, n = wanted, 2
        while stem in self.used:
            stem, n = f"{wanted}_{n}", n + 1
        self.used.add(stem)
        return stem


def save_npz(path: Path, result) -> None:
    d = result.detections
    np.savez_compressed(path, det_boxes_xyxy=d.boxes.astype(np.float32),
                        det_scores=d.scores.astype(np.float32),
                        det_classes=d.classes.astype(np.int64), seg_mask=result.seg_mask)


class _Stats:
    def __init__(self):
        self.frames = 0
        self.timings: dict[str, list[float]] = {}

    def add(self, result) -> None:
        self.frames += 1
        for stage, ms in result.timings_ms.items():
            self.timings.setdefault(stage, []).append(ms)

    def summary(self) -> str:
        if not self.frames:
            return "0 frames"
        means = {k: float(np.mean(v)) for k, v in self.timings.items()}
        stages = ", ".join(f"{k} {v:.1f}" for k, v in means.items())
        return f"{self.frames} frames, mean {sum(means.values()):.1f} ms/frame ({stages} ms)"


def process_sources(pipeline, sources, output: Path, save: bool) -> tuple[_Stats, list[str]]:
    """Run every source; returns the timing stats and one message per failed input."""
    import cv2
    from tqdm import tqdm

    from .sources import InputError, VideoReader, count_frames, read_image
    from .visualize import draw_overlay

    names = _Outputs(output)
    stats, failures = _Stats(), []
    total = sum(count_frames(s) for s in sources)
    names_of = pipeline.spec.class_names
    with tqdm(total=total, unit="frame", disable=total <= 1, file=sys.stderr) as bar:
        for source in sources:
            try:
                if source.kind == "image":
                    image = read_image(source.path)
                    result = pipeline(image)
                    stem = names.stem(source.path.stem)
                    cv2.imwrite(str(output / f"{stem}.jpg"),
                                draw_overlay(image, result.seg_mask, result.detections, names_of))
                    if save:
                        save_npz(output / f"{stem}.npz", result)
                    stats.add(result)
                    bar.update(1)
                    continue
                reader = VideoReader(source.path)
                stem = names.stem(source.path.stem)
                writer = None
                for index, frame in enumerate(reader):
                    result = pipeline(frame)
                    overlay = draw_overlay(frame, result.seg_mask, result.detections, names_of)
                    if writer is None:
                        writer = cv2.VideoWriter(str(output / f"{stem}.mp4"),
                                                 cv2.VideoWriter_fourcc(*"mp4v"), reader.fps,
                                                 (frame.shape[1], frame.shape[0]))
                    writer.write(overlay)
                    if save:
                        save_npz(output / f"{stem}_{index:06d}.npz", result)
                    stats.add(result)
                    bar.update(1)
                if writer is None:
                    raise InputError(f"{source.path}: video has no readable frames")
                writer.release()
            except InputError as exc:
                failures.append(str(exc))
                tqdm.write(f"skipped {exc}", file=sys.stderr)
    return stats, failures


def cmd_infer(args) -> int:
    from .sources import expand_sources

    sources, failures = expand_sources(args.sources)
    for message in failures:
        print(f"skipped {message}", file=sys.stderr)
    pipeline = build_pipeline(args, resolve_weights(args.weights, args.random_weights))
    log.info("backend: %s", pipeline.backend.describe())
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    stats, failed = process_sources(pipeline, sources, output, args.save_npz)
    failures += failed
    print(f"hybridnets infer: {stats.summary()}; {len(failures)} input(s) failed; "
          f"outputs in {output}")
    return 1 if failures or not stats.frames else 0


def cmd_download_weights(args) -> int:
    from .weights import RELEASE_URL, download_weights

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


def demo_weights() -> Path | None:
    """Downloaded weights, else try to download them; None (random) when that fails."""
    from .weights import download_weights

    path = default_weights_path()
    if path.is_file():
        return path
    log.info("no weights at %s: trying to download them", path)
    try:
        return download_weights(path, timeout=15.0)
    except WeightsError as exc:
        log.warning("%s", exc)
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return None


def cmd_demo(args) -> int:
    import itertools

    from .ros.bags import BagError, is_bag
    from .ros.camera_info import camera_info_from_model, camera_info_from_yaml
    from .ros.demo import run_demo
    from .ros.replay import frames_from_bag
    from .synthetic import SyntheticRoad, default_camera

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
        sources, errors = _sources_or_fail(args.source)
        frames = itertools.islice(_frames_of(sources), args.frames)
        try:
            camera_info = camera_info_from_yaml(args.camera_info, frame_id) if args.camera_info else None
        except ValueError as exc:
            raise CliError(str(exc)) from None
    else:
        scene = SyntheticRoad(default_camera())
        frames = (scene.render(i / args.rate)[0] for i in range(args.frames))
        camera_info = camera_info_from_model(scene.camera, frame_id)
    weights = demo_weights()
    output = Path(args.output)
    try:
        summary = run_demo(frames, camera_info, output, weights, rate_hz=args.rate,
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


def cmd_export(args) -> int:
    from .backends import BackendUnavailable
    from .export import run_export
    from .quantize import CalibrationError

    weights = resolve_weights(args.weights, args.random_weights)
    try:
        return run_export(args, weights)
    except (WeightsError, BackendUnavailable, CalibrationError, ValueError) as exc:
        raise CliError(str(exc)) from None


def cmd_bench(args) -> int:
    from .backends import BackendUnavailable
    from .bench import main as bench_main

    if args.frames < 1:
        raise CliError("--frames must be at least 1")
    try:
        return bench_main(args)
    except (WeightsError, BackendUnavailable, ValueError) as exc:
        raise CliError(str(exc)) from None


def cmd_replay(args) -> int:
    from tqdm import tqdm

    from .resources import share_file
    from .ros.bags import BagError
    from .ros.params import read_params_file
    from .ros.replay import replay

    try:
        params = read_params_file(args.params_file or share_file("config/hybridnets.yaml"))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    args.backend = args.backend or params["backend"]
    args.precision, args.calib = params["precision"], None
    args.size, args.conf, args.iou = params["input_size"], params["conf_threshold"], params["iou_threshold"]
    pipeline = build_pipeline(args, resolve_weights(args.weights or params["weights"] or None,
                                                    args.random_weights))
    log.info("backend: %s", pipeline.backend.describe())

    def progress(total):
        return tqdm(total=total, unit="frame", file=sys.stderr, desc="replay")

    try:
        summary = replay(Path(args.in_bag), Path(args.out), pipeline, params,
                         image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
                         keep_input=args.keep_input, video=Path(args.video) if args.video else None,
                         storage=args.storage, namespace=args.namespace, progress_factory=progress,
                         say=lambda text: print(text, file=sys.stderr))
    except BagError as exc:
        raise CliError(str(exc)) from None
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    rejected = sum(summary.rejected.values())
    state = "interrupted: " if summary.interrupted else ""
    print(f"hybridnets replay: {state}{summary.frames} frames of {summary.image_topic} -> "
          f"{summary.written} messages in {args.out}"
          f"{' (with grids)' if summary.grids else ' (no grids)'}"
          f"{f'; {rejected} images rejected' if rejected else ''}")
    return 130 if summary.interrupted else (0 if summary.frames else 1)


def cmd_make_bag(args) -> int:
    from tqdm import tqdm

    from .ros.bags import BagError
    from .ros.camera_info import camera_info_from_yaml
    from .ros.make_bag import FRAME_ID, make_bag
    from .sources import VideoReader, count_frames

    sources, _ = _sources_or_fail(args.source)
    rate = args.rate
    if rate is None:
        rate = VideoReader(sources[0].path).fps if sources[0].kind == "video" else 10.0
    if rate <= 0:
        raise CliError("--rate must be > 0")
    try:
        info = camera_info_from_yaml(args.camera_info, FRAME_ID) if args.camera_info else None
        with tqdm(total=sum(count_frames(s) for s in sources), unit="frame", file=sys.stderr,
                  desc="make-bag") as bar:
            count = make_bag(_frames_of(sources), Path(args.out), rate, info, args.compressed,
                             args.storage, progress=bar.update)
    except (BagError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"hybridnets make-bag: {count} frames at {rate:g} Hz -> {args.out}"
          f"{' with camera_info' if info else ''}")
    return 0 if count else 1


def _sources_or_fail(path: str):
    from .sources import expand_sources

    sources, errors = expand_sources([path])
    if errors or not sources:
        raise CliError("; ".join(errors) or f"{path}: nothing to read")
    return sources, errors


def _frames_of(sources):
    """BGR frames of image and video sources, skipping unreadable ones with a message."""
    from .sources import InputError, VideoReader, read_image

    for source in sources:
        try:
            if source.kind == "image":
                yield read_image(source.path)
            else:
                yield from VideoReader(source.path)
        except InputError as exc:
            print(f"skipped {exc}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CliError as exc:
        print(f"hybridnets {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
