"""Which exact CPU engine ``auto`` runs: this CPU's measurement where ``hybridnets bench``
has made one, else a rule per instruction set.

Why both: ONNX Runtime and OpenVINO lead on different CPUs, by margins that depend on the
network (docs/benchmarks.md: OpenVINO ahead on the Xeon with AMX, ONNX Runtime ahead on the
AVX2-only Zen 3; on the Zen 4 by network), so a measurement on the machine itself beats any
rule; the rule covers the starts before one exists. A measurement is kept per network and
letterbox size, under the CPU's model and flags and the engines' versions: a new CPU or engine
release falls back to the rule until the next bench.
"""
from __future__ import annotations

import json
import logging
import os
import time
from importlib import metadata
from pathlib import Path

from ..core.weights import cache_dir
from .cpu import cpu_flags, cpu_name, isa_limits, speed_flags

log = logging.getLogger(__name__)

CHOICE_FILE = "cpu_engine_choice.json"
# The fp32 engines auto may run on a CPU (torch: frozen channels-last, what "torch" builds).
CANDIDATES = ("torch", "onnxruntime", "openvino")


def machine_key() -> str:
    """This CPU and the engines' versions, as one string (the measurement's key)."""
    versions = []
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    # A run with the instruction sets capped (cpu.ISA_LIMIT_VARIABLES) measures another
    # machine: its own key, so that it never decides for the uncapped one.
    return " | ".join([cpu_name(), " ".join(speed_flags()), *isa_limits(), *versions])


def _path() -> Path:
    return cache_dir() / CHOICE_FILE


def _load() -> dict:
    try:
        return json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}


def measured_size(adapter, input_size: int) -> int | None:
    """The letterbox size a measurement of ``adapter`` (a ModelAdapter) at ``input_size`` is
    kept under: None for a network whose input does not follow it (one record for all)."""
    return input_size if adapter.uses_input_size else None


def _size_key(size: int | None) -> str:
    # Networks whose input does not follow the letterbox size: one record for every size.
    return "any size" if size is None else f"size {size}"


def measured_choice(model: str, available: list[str],
                    size: int | None = None) -> tuple[str, str] | None:
    """(backend, why) from this machine's measurement of ``model`` at letterbox ``size``
    (None: a network whose input does not depend on it), if one covers an ``available``
    engine; None otherwise. Per size because the engines' margin changes with the input
    size (docs/benchmarks.md), so a record at one size is not evidence for another."""
    record = _load().get(machine_key(), {}).get(model, {}).get(_size_key(size))
    if not isinstance(record, dict) or "network_ms" not in record:
        return None
    timings = {name: ms for name, ms in record["network_ms"].items() if name in available}
    if not timings:
        return None
    best = min(timings, key=timings.get)
    listing = ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(timings.items(),
                                                                     key=lambda kv: kv[1]))
    return best, (f"the fastest exact engine measured on this CPU by hybridnets bench on "
                  f"{record['date']} ({listing} per frame, {_size_key(size)})")


def record_measurement(model: str, network_ms: dict[str, float], size: int | None) -> Path:
    """Keep ``network_ms`` (network ms per exact fp32 engine, timed in turn) as this
    machine's measurement of ``model`` at ``size`` (see measured_choice); written
    atomically, other machines', networks' and sizes' entries kept."""
    doc = _load()
    records = doc.setdefault(machine_key(), {})
    if not isinstance(records.get(model), dict) or "network_ms" in records[model]:
        records[model] = {}  # none yet, or one of before the records were per size
    records[model][_size_key(size)] = {
        "network_ms": {k: round(v, 2) for k, v in network_ms.items() if k in CANDIDATES},
        "date": time.strftime("%Y-%m-%d")}
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def rule_choice(available: list[str]) -> tuple[str, str]:
    """(backend, why) from the instruction set alone: OpenVINO on CPUs with AVX-512 or AMX
    (measured ahead on the Xeon with AMX, and on the Zen 4 for HybridNets and HyCTAS but not
    Hydra), ONNX Runtime on AVX2-only and non-x86 CPUs (measured ahead on Zen 3), torch
    without either."""
    flags = cpu_flags()
    wide = bool(flags & {"avx512f", "amx_tile"})
    order = ("openvino", "onnxruntime") if wide else ("onnxruntime", "openvino")
    for name in order:
        if name in available:
            kind = "AVX-512/AMX" if wide else "AVX2-only or non-x86"
            return name, (f"rule for {kind} CPUs (docs/benchmarks.md), as this CPU has no "
                          "measurement yet: `hybridnets bench` measures and records the fastest")
    return "torch", "neither onnxruntime nor openvino can run here"
