"""``hybridnets replay``: a bag's camera images through the node's frame path into a new bag."""
from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path

from ..tools.bags import BagError, DamagedBag
from ..tools.replay import bag_cameras, replay
from .common import (EXIT_DAMAGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_STATUS_HELP,
                     CliError, add_bag_options, bag_config, pipeline_from_config, topic_list)

log = logging.getLogger("hybridnets")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "replay", help="run a bag's camera images through the pipeline into a new bag",
        description="Reads a ROS 2 (mcap, sqlite3) or ROS 1 bag, runs every image through the "
                    "node's pipeline and writes the node's outputs (detections, masks, grids "
                    "when the bag has camera_info, overlay) to a new bag, each stamped like its "
                    "image and recorded at the image's bag time. Ctrl-C keeps a valid bag. "
                    "A damaged bag is read as far as it can be (past a bad MCAP chunk, up to "
                    "where a cut-off recording ends); the summary says what was lost and "
                    "where, and the exit status is 3.",
        epilog=EXIT_STATUS_HELP)
    p.add_argument("in_bag", metavar="IN_BAG", help="bag folder or .mcap/.db3/.bag file")
    p.add_argument("--out", required=True, metavar="OUT_BAG", help="output bag (must not exist)")
    p.add_argument("--image-topic", "--image-topics", dest="image_topics", type=topic_list,
                   metavar="T[,T...]", help="Image or CompressedImage topics (default: every "
                   "camera of the bag; several: outputs under each camera's name)")
    p.add_argument("--camera-info-topic", help="CameraInfo topic (default: the one beside the images)")
    add_bag_options(p)
    p.add_argument("--keep-input", action="store_true", help="copy the input bag's topics too")
    p.add_argument("--video", metavar="FILE", help="also write the overlay beside the grids as MP4")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                   help="output storage (default mcap; sqlite3 for Humble's rosbag2 without "
                        "ros-humble-rosbag2-storage-mcap)")
    p.add_argument("--namespace", default="", help="prefix of the output topics (default none)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    config = bag_config(args)
    with _bag_errors():  # before the model is loaded: a bad bag is told at once
        bag_cameras(Path(args.in_bag), args.image_topics, args.camera_info_topic)
    if args.video:  # its folder, before the work rather than after it
        try:
            Path(args.video).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"--video {args.video}: cannot create its folder "
                           f"({exc.strerror or exc})") from None
    pipeline = pipeline_from_config(config)
    log.info("backend: %s", pipeline.backend.describe())

    def progress(total):
        return tqdm(total=total, unit="frame", file=sys.stderr, desc="replay")

    with _bag_errors():
        summary = replay(Path(args.in_bag), Path(args.out), pipeline, config,
                         image_topics=args.image_topics, camera_info_topic=args.camera_info_topic,
                         keep_input=args.keep_input, video=Path(args.video) if args.video else None,
                         storage=args.storage, namespace=args.namespace, progress_factory=progress,
                         say=lambda text: print(text, file=sys.stderr))
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    for damage in summary.damage:
        print(f"damage: {damage}", file=sys.stderr)
    rejected = sum(summary.rejected.values())
    state = "interrupted: " if summary.interrupted else "damaged bag: " if summary.damage else ""
    print(f"hybridnets replay: {state}{summary.frames} frames of {', '.join(summary.image_topics)} -> "
          f"{summary.written} messages in {args.out}"
          f"{' (with grids)' if summary.grids else ' (no grids)'}"
          f"{f'; {rejected} images rejected' if rejected else ''}"
          f"{f'; {summary.reading()}' if summary.damage and not summary.interrupted else ''}")
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_DAMAGED if summary.damage else EXIT_OK if summary.frames else EXIT_FAILED


@contextmanager
def _bag_errors():
    """A bag that cannot be read as a CliError: exit status 3 when it is damaged, else 2."""
    try:
        yield
    except DamagedBag as exc:
        raise CliError(str(exc), EXIT_DAMAGED) from None
    except BagError as exc:
        raise CliError(str(exc)) from None
