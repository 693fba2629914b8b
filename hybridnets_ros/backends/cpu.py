"""What this CPU is: its model name and instruction-set flags, read from /proc/cpuinfo."""
from __future__ import annotations

import platform
from pathlib import Path

# Instruction sets with an int8 dot product accumulating in int32 (no int16 saturation).
VNNI_CPU_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_int8_dot_product() -> bool:
    """True on x86-64 CPUs with VNNI or AMX; False on AVX2-only ones (e.g. AMD Zen 3), whose
    u8 x s8 kernels sum pairs of products in int16 and saturate with full-range weights."""
    return bool(cpu_flags().intersection(VNNI_CPU_FLAGS)) or platform.machine() not in (
        "x86_64", "AMD64")
