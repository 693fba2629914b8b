"""What this CPU is: its model name and instruction-set flags, read from /proc/cpuinfo."""
from __future__ import annotations

import os
import platform
from pathlib import Path

# Instruction sets with an int8 dot product accumulating in int32 (no int16 saturation).
VNNI_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
SPEED_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "asimd", "asimddp")
# Environment variables that cap the instruction sets the engines use below the CPU's:
# oneDNN's (OpenVINO's and torch's convolutions) and MKL's (torch's matrix products).
# ONNX Runtime has none. Setting them on an AVX-512 machine runs it as an AVX2-only one.
ISA_LIMIT_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def _cpuinfo_value(keys: tuple[str, ...]) -> str | None:
    """The value of the first /proc/cpuinfo line whose key is one of ``keys``."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value.strip()
    return None


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    return set((_cpuinfo_value(("flags", "Features")) or "").split())


def cpu_name() -> str:
    return _cpuinfo_value(("model name",)) or platform.processor() or platform.machine()


def speed_flags() -> list[str]:
    """This CPU's flags among those that decide engine speed (SIMD width, int8 and bf16
    dot products, AMX; NEON and its dot product on ARM), in a fixed order."""
    have = cpu_flags()
    return [f for f in SPEED_CPU_FLAGS if f in have]


def isa_limits() -> list[str]:
    """``NAME=value`` of each instruction-set cap set in the environment (ISA_LIMIT_VARIABLES)."""
    return [f"{name}={os.environ[name]}" for name in ISA_LIMIT_VARIABLES if os.environ.get(name)]


def has_int8_dot_product() -> bool:
    """True on x86-64 CPUs with VNNI or AMX; False on AVX2-only ones (e.g. AMD Zen 3), whose
    u8 x s8 kernels sum pairs of products in int16 and saturate with full-range weights."""
    return bool(cpu_flags().intersection(VNNI_CPU_FLAGS)) or platform.machine() not in (
        "x86_64", "AMD64")
