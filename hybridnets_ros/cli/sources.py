"""Frames from the command line's image, folder and video arguments."""
from __future__ import annotations

import sys

from ..core.sources import InputError, VideoReader, expand_sources, read_image
from .common import CliError


def sources_or_fail(path: str):
    sources, errors = expand_sources([path])
    if errors or not sources:
        raise CliError("; ".join(errors) or f"{path}: nothing to read")
    return sources, errors


def frames_of(sources):
    """BGR frames of image and video sources, skipping unreadable ones with a message."""
    for source in sources:
        try:
            if source.kind == "image":
                yield read_image(source.path)
            else:
                yield from VideoReader(source.path)
        except InputError as exc:
            print(f"skipped {exc}", file=sys.stderr)
