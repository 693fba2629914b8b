"""Downloading a released checkpoint: atomic, checked, for any network.

The adapter says where its checkpoint is published (``ModelAdapter.weights_url``) and how a
file is checked (a strict load into its module); this module only moves the bytes.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .weights import WeightsError

log = logging.getLogger(__name__)


def download(url: str, dest: str | os.PathLike, check: Callable[[Path], None],
             sha256: str = "", progress: bool = True, timeout: float = 30.0) -> Path:
    """``url`` saved at ``dest``: written beside it under a temporary name, its SHA-256
    compared with ``sha256`` (when known), ``check``-ed (raising WeightsError) and only then
    renamed into place; any failure removes it, so a partial file never stays behind."""
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(url, timeout=timeout)
            except (urllib.error.URLError, OSError) as exc:
                raise WeightsError(f"cannot download {url}: {getattr(exc, 'reason', exc)}") from None
            with response, tqdm(total=int(response.headers.get("Content-Length") or 0) or None,
                                unit="B", unit_scale=True, unit_divisor=1024,
                                desc=dest.name, disable=not progress) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if sha256 and digest.hexdigest() != sha256:
            raise WeightsError(f"downloaded file from {url} has SHA-256 {digest.hexdigest()}, "
                               f"expected {sha256} (changed upstream or damaged on the way)")
        check(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("saved %s (sha256 %s)", dest, digest.hexdigest())
    return dest
