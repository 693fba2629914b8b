"""``hybridnets make-bag``: images or a video (+ calibration) -> a bag to replay."""
from __future__ import annotations

import sys
from pathlib import Path

from ..core.sources import VideoReader, count_frames
from ..pipeline.config import NodeConfig
from ..ros.camera_info import camera_info_from_yaml
from ..ros.resources import share_file
from ..tools.bags import BagError
from ..tools.make_bag import FRAME_ID, make_bag
from .common import CliError
from .sources import frames_of, sources_or_fail


def add_parser(sub) -> None:
    p = sub.add_parser("make-bag", help="turn images or a video into a bag to replay",
                       description="Writes /camera/image_raw (or /camera/image_raw/compressed), "
                                   "/tf_static with the camera pose and, with --camera-info, "
                                   "/camera/camera_info.")
    p.add_argument("source", metavar="SOURCE", help="folder of images or a video file")
    p.add_argument("--out", required=True, metavar="BAG", help="output bag (must not exist)")
    p.add_argument("--rate", type=float, help="frames per second (default: the video's, else 10)")
    p.add_argument("--camera-info", metavar="YAML", help="calibration (camera_calibration_parsers YAML)")
    p.add_argument("--compressed", action="store_true", help="JPEG CompressedImage instead of Image")
    p.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                   help="default mcap; sqlite3 for Humble's rosbag2 without "
                        "ros-humble-rosbag2-storage-mcap")
    defaults = NodeConfig.from_params_file(share_file("config/hybridnets.yaml"))
    p.add_argument("--camera-pose", type=float, nargs=6, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                   default=list(defaults.camera_pose),
                   help="the camera body frame in --ground-frame, written to /tf_static (metres, "
                        f"radians; default config/hybridnets.yaml's {list(defaults.camera_pose)})")
    p.add_argument("--ground-frame", default=defaults.ground_frame,
                   help=f"parent frame of the camera pose (default {defaults.ground_frame})")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    sources, _ = sources_or_fail(args.source)
    rate = args.rate
    if rate is None:
        rate = VideoReader(sources[0].path).fps if sources[0].kind == "video" else 10.0
    try:
        info = camera_info_from_yaml(args.camera_info, FRAME_ID) if args.camera_info else None
        with tqdm(total=sum(count_frames(s) for s in sources), unit="frame", file=sys.stderr,
                  desc="make-bag") as bar:
            count = make_bag(frames_of(sources), Path(args.out), rate, info, args.compressed,
                             args.storage, progress=bar.update, camera_pose=args.camera_pose,
                             ground_frame=args.ground_frame)
    except (BagError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"hybridnets make-bag: {count} frames at {rate:g} Hz -> {args.out}"
          f"{' with camera_info' if info else ''}")
    return 0 if count else 1
