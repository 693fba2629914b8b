"""What every command shares: errors, model options, the configuration from options."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Mapping

from ..backends import BackendUnavailable
from ..backends.quantize import CalibrationError
from ..core.registry import ModelSettings
from ..core.weights import WeightsError
from ..pipeline.config import FIELD_TYPES, ConfigError, NodeConfig, settings
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


def add_setting_options(p: argparse.ArgumentParser, *names: str,
                        defaults: Mapping[str, str] | None = None) -> None:
    """The command-line options of the settings ``names`` (the option their metadata names),
    with the setting's description as help. An option left out keeps the base
    configuration's value; ``defaults`` says what that is where it is not the setting's
    default (e.g. a params file's)."""
    fields = {f.name: f for f in settings()}
    for name in names:
        meta, kind = fields[name].metadata, FIELD_TYPES[name]
        default = (defaults or {}).get(name, fields[name].default)
        shown = default != "" and kind is not bool
        text = meta["description"] + (f" (default {default})" if shown else "")
        text = text.replace("%", "%%")  # argparse formats help with %
        if kind is bool:
            p.add_argument(meta["option"], dest=name, action="store_true", default=None,
                           help=text)
        else:
            p.add_argument(meta["option"], dest=name, type=kind, choices=meta["choices"],
                           metavar=meta["metavar"], help=text)


def add_family_options(p: argparse.ArgumentParser) -> None:
    """--model, the options of the settings the networks add, and --max-detections."""
    added = [f.name for f in dataclasses.fields(ModelSettings) if f.metadata["option"]]
    add_setting_options(p, "model", *added, "max_detections")


def add_model_options(p: argparse.ArgumentParser, thresholds: bool = True) -> None:
    add_family_options(p)
    add_setting_options(p, "weights", "allow_random_weights", "input_size",
                        *(("conf_threshold", "iou_threshold") if thresholds else ()),
                        "device", "backend", "precision", "int8_calibration")


def add_bag_options(p: argparse.ArgumentParser, weights_note: str = "") -> None:
    """--params-file and the model options of the commands that replay bags (replay, fleet)."""
    p.add_argument("--params-file", metavar="YAML",
                   help="node parameters: thresholds, camera poses, grid (default "
                        "config/hybridnets.yaml)")
    add_family_options(p)
    add_setting_options(p, "weights", "allow_random_weights", "backend", "device", defaults={
        "weights": f"the params file's, else the cache's{weights_note}",
        "backend": "the params file's", "device": "the params file's"})


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
    changes = {f.name: getattr(args, f.name) for f in settings()
               if f.metadata["option"] and getattr(args, f.name, None) is not None}
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
