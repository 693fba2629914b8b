"""What every command shares: errors, model options, the configuration from options."""
from __future__ import annotations

import argparse
import sys

from ..backends import BackendUnavailable
from ..backends.quantize import CalibrationError
from ..core.registry import model_settings
from ..core.weights import WeightsError, default_weights_path
from ..pipeline.config import BACKEND_CHOICES, MODEL_CHOICES, PRECISIONS, ConfigError, NodeConfig
from ..pipeline.factory import build_pipeline, resolve_weights
from ..ros.resources import share_file
# the commands import these from here
from .status import (EXIT_BUSY, EXIT_DAMAGED, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401
                     EXIT_STATUS_HELP, EXIT_USAGE, CliError)

RANDOM_WEIGHTS_WARNING = (
    "\n"
    "!!! RANDOM WEIGHTS: the network is randomly initialised, so its boxes and masks are\n"
    "!!! meaningless. This run only shows the pipeline working end to end. Get the real\n"
    "!!! checkpoint with `hybridnets download-weights` or pass --weights PATH.\n")

# Problems a command reports in one line, without a traceback (exit status 2).
USER_ERRORS = (ConfigError, WeightsError, BackendUnavailable, CalibrationError)


# option dest -> setting; options left at None keep the base configuration's value
OPTION_SETTINGS = {"model": "model", "weights": "weights", "random_weights": "allow_random_weights",
                   "size": "input_size", "conf": "conf_threshold", "iou": "iou_threshold",
                   "device": "device", "backend": "backend", "precision": "precision",
                   "calib": "int8_calibration", "max_detections": "max_detections",
                   **{s.name: s.name for s in model_settings() if s.option}}


def add_family_options(p: argparse.ArgumentParser) -> None:
    """--model and the options of the settings the networks add (ModelAdapter.settings)."""
    defaults = NodeConfig()
    p.add_argument("--model", choices=MODEL_CHOICES,
                   help=f"the network (default {defaults.model}; docs/models.md)")
    for setting in model_settings():
        if setting.option:
            kind = str if isinstance(setting.default, str) else type(setting.default)
            p.add_argument(setting.option, dest=setting.name, type=kind, choices=setting.choices,
                           metavar=setting.metavar,
                           help=f"{setting.description} (default {setting.default})")
    p.add_argument("--max-detections", type=int, metavar="N",
                   help=f"detections kept per image, best first (default "
                        f"{defaults.max_detections}; a frame with more says so once per run)")


def add_model_options(p: argparse.ArgumentParser, thresholds: bool = True) -> None:
    defaults = NodeConfig()
    add_family_options(p)
    p.add_argument("--weights", metavar="PATH",
                   help=f"checkpoint of the model (default: the cache's, e.g. "
                        f"{default_weights_path()} if downloaded)")
    p.add_argument("--random-weights", action="store_true", default=None,
                   help="run with random weights when no checkpoint is found (meaningless outputs)")
    p.add_argument("--size", type=int, help=f"letterbox target size (default {defaults.input_size})")
    if thresholds:
        p.add_argument("--conf", type=float,
                       help=f"score threshold (default {defaults.conf_threshold})")
        p.add_argument("--iou", type=float,
                       help=f"NMS IoU threshold (default {defaults.iou_threshold})")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default auto: cuda when available)")
    p.add_argument("--backend", choices=BACKEND_CHOICES,
                   help="inference engine (default auto: the best one available, logged)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="fp16: CUDA only; bf16: openvino on CPUs with AVX512-BF16/AMX; int8: "
                        "onnxruntime or openvino (CPU), tensorrt, torch2trt, needs --calib "
                        "(default fp32)")
    p.add_argument("--calib", metavar="DIR",
                   help="INT8 calibration images, frames like the camera's (6-32 are enough)")


def add_bag_options(p: argparse.ArgumentParser, weights_note: str = "") -> None:
    """--params-file and the model options of the commands that replay bags (replay, fleet)."""
    p.add_argument("--params-file", metavar="YAML",
                   help="node parameters: thresholds, camera poses, grid (default "
                        "config/hybridnets.yaml)")
    add_family_options(p)
    p.add_argument("--weights", metavar="PATH", help="checkpoint (default: the params file's, "
                   f"else the downloaded one){weights_note}")
    p.add_argument("--random-weights", action="store_true", default=None,
                   help="run with random weights when no checkpoint is found (meaningless outputs)")
    p.add_argument("--backend", help="inference engine (default: the params file's, auto)")
    p.add_argument("--device", help="cpu or cuda[:N] (default: the params file's, auto)")


def bag_config(args: argparse.Namespace) -> NodeConfig:
    """The params file (default config/hybridnets.yaml) with the command line's options; a
    bag's images come at their own size, so the engine is built for the first one."""
    try:
        params = NodeConfig.from_params_file(args.params_file or share_file("config/hybridnets.yaml"))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return config_from_options(args, base=params, camera_resolution=[])


def config_from_options(args: argparse.Namespace, base: NodeConfig | None = None,
                        **fixed) -> NodeConfig:
    """``base`` (default: the defaults) with the options given on the command line and
    ``fixed`` settings; a bad value is a CliError naming it."""
    changes = {setting: getattr(args, dest) for dest, setting in OPTION_SETTINGS.items()
               if getattr(args, dest, None) is not None}
    try:
        return NodeConfig.from_mapping({**changes, **fixed}, base=base, source="options")
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def pipeline_from_config(config: NodeConfig):
    """build_pipeline with the random-weights banner and errors as CliError."""
    try:
        if resolve_weights(config) is None:
            print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
        return build_pipeline(config)
    except USER_ERRORS as exc:
        raise CliError(str(exc)) from None


def topic_list(text: str) -> list[str]:
    """A comma-separated list of topics (argparse type)."""
    topics = [t.strip() for t in text.split(",") if t.strip()]
    if not topics:
        raise argparse.ArgumentTypeError("no topic given")
    return topics
