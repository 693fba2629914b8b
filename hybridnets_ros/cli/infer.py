"""``hybridnets infer``: images, folders and videos -> annotated overlays (and .npz)."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from .common import (EXIT_FAILED, EXIT_OK, EXIT_STATUS_HELP, CliError, add_model_options,
                     config_from_options, pipeline_from_config)

log = logging.getLogger("hybridnets")


def add_parser(sub) -> None:
    p = sub.add_parser("infer", help="detect and segment images, folders and videos",
                       description="Write an annotated overlay per image (and an annotated video "
                                   "per video) to the output folder.", epilog=EXIT_STATUS_HELP)
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="image files, folders or videos")
    add_model_options(p)
    p.add_argument("--output", default="out/infer", help="output folder (default out/infer)")
    p.add_argument("--save-npz", action="store_true",
                   help="also write <stem>.npz with det_boxes_xyxy, det_scores, det_classes, "
                        "seg_mask (uint8 class ids in the model's class order), and where the "
                        "network has them drivable_mask and lane_mask (uint8 0/1) and depth_m "
                        "(float32 metres)")
    p.set_defaults(func=run)


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
    extra = {name: getattr(result, name).astype(np.uint8)
             for name in ("drivable_mask", "lane_mask") if getattr(result, name) is not None}
    if result.depth_m is not None:
        extra["depth_m"] = result.depth_m.astype(np.float32)
    np.savez_compressed(path, det_boxes_xyxy=d.boxes.astype(np.float32),
                        det_scores=d.scores.astype(np.float32),
                        det_classes=d.classes.astype(np.int64),
                        seg_mask=result.seg_mask.astype(np.uint8), **extra)


def overlay(image: np.ndarray, result, adapter) -> np.ndarray:
    """The annotated picture in the network's style (core.visualize.draw_result), beside a
    depth picture when the network has depth."""
    from ..core.visualize import depth_picture, draw_result

    out = draw_result(image, result, adapter)
    return out if result.depth_m is None else np.hstack([out, depth_picture(result.depth_m)])


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

    from ..core.sources import InputError, VideoReader, count_frames, read_image

    names = _Outputs(output)
    stats, failures = _Stats(), []
    total = sum(count_frames(s) for s in sources)
    adapter = pipeline.adapter
    with tqdm(total=total, unit="frame", disable=total <= 1, file=sys.stderr) as bar:
        for source in sources:
            try:
                if source.kind == "image":
                    image = read_image(source.path)
                    result = _run(pipeline, image, str(source.path))
                    stem = names.stem(source.path.stem)
                    written = output / f"{stem}.jpg"
                    if not cv2.imwrite(str(written), overlay(image, result, adapter)):
                        raise InputError(f"{source.path}: cannot write {written}")
                    if save:
                        save_npz(output / f"{stem}.npz", result)
                    stats.add(result)
                    bar.update(1)
                    continue
                reader = VideoReader(source.path)
                stem = names.stem(source.path.stem)
                writer = None
                for index, frame in enumerate(reader):
                    result = _run(pipeline, frame, f"{source.path} (frame {index})")
                    picture = overlay(frame, result, adapter)
                    if writer is None:
                        writer = cv2.VideoWriter(str(output / f"{stem}.mp4"),
                                                 cv2.VideoWriter_fourcc(*"mp4v"), reader.fps,
                                                 (picture.shape[1], picture.shape[0]))
                        if not writer.isOpened():
                            raise InputError(f"{source.path}: cannot write {output / stem}.mp4")
                    writer.write(picture)
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


def _run(pipeline, image: np.ndarray, name: str):
    """The pipeline's result; an image it refuses (its size) named like any other input."""
    from ..core.sources import InputError
    try:
        return pipeline(image)
    except InputError as exc:
        raise InputError(f"{name}: {exc}", exc.kind) from None


def run(args) -> int:
    from ..core.sources import expand_sources

    sources, failures = expand_sources(args.sources)
    for message in failures:
        print(f"skipped {message}", file=sys.stderr)
    # Images of any size: each engine is built for the sizes that come, not ahead of time.
    pipeline = pipeline_from_config(config_from_options(args, camera_resolution=[]))
    log.info("backend: %s", pipeline.backend.describe())
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. --output names an existing file
        raise CliError(f"--output {output}: cannot use it as the output folder "
                       f"({exc.strerror or exc})") from None
    stats, failed = process_sources(pipeline, sources, output, args.save_npz)
    failures += failed
    print(f"hybridnets infer: {stats.summary()}; {len(failures)} input(s) failed; "
          f"outputs in {output}")
    return EXIT_FAILED if failures or not stats.frames else EXIT_OK
