"""What scripts/bootstrap.sh should do on this machine: a Jetson with JetPack keeps JetPack's
CUDA PyTorch and TensorRT (a venv with --system-site-packages, never PyPI's torch, which is
a CPU-only build for aarch64 and would shadow them); any other machine takes the usual path.

Standard library only: bootstrap runs it with the Python that creates the venv, before any
dependency exists. ``python3 scripts/detect_platform.py [--root DIR]`` prints shell
assignments for bootstrap to eval (JETSON, SYSTEM_SITE, INSTALL_TORCH, REFUSE) and says what
it found on stderr. ``--root`` points the file checks elsewhere (the tests' fake systems).
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# L4T major release -> JetPack major version (NVIDIA's JetPack/L4T release tables).
JETPACK_OF_L4T = {36: "6", 35: "5", 34: "5", 32: "4"}
EXPECTED_JETPACK = "6"  # TensorRT 10 and CUDA 12: what the TensorRT backend is written against


@dataclass(frozen=True)
class Platform:
    machine: str
    l4t: str | None          # L4T release, e.g. "36.4.0"; None: not a Jetson with JetPack
    found_in: str | None     # where the release came from

    @property
    def jetson(self) -> bool:
        return self.machine == "aarch64" and self.l4t is not None

    @property
    def jetpack(self) -> str | None:
        if self.l4t is None:
            return None
        return JETPACK_OF_L4T.get(int(self.l4t.split(".")[0]))


def _from_tegra_release(text: str) -> str | None:
    # e.g. "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: generic, EABI: aarch64, ..."
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)\.(\d+)", text)
    return f"{match[1]}.{match[2]}.{match[3]}" if match else None


def _from_dpkg_status(text: str) -> str | None:
    """The installed nvidia-l4t-core package's version, e.g. 36.4.0-20240912212859 -> 36.4.0."""
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines()
                      if ": " in line and not line.startswith(" "))
        if fields.get("Package") == "nvidia-l4t-core" and "installed" in fields.get("Status", ""):
            match = re.match(r"(\d+\.\d+(?:\.\d+)?)", fields.get("Version", ""))
            return match[1] if match else None
    return None


def detect(root: Path = Path("/"), machine: str | None = None) -> Platform:
    """This machine (or the system under ``root``): its architecture and L4T release, read
    from /etc/nv_tegra_release, else from the nvidia-l4t-core package."""
    machine = (machine or platform.machine()).lower()
    release = root / "etc" / "nv_tegra_release"
    if release.is_file() and (l4t := _from_tegra_release(release.read_text(errors="replace"))):
        return Platform(machine, l4t, str(release))
    status = root / "var" / "lib" / "dpkg" / "status"
    if status.is_file() and (l4t := _from_dpkg_status(status.read_text(errors="replace"))):
        return Platform(machine, l4t, "package nvidia-l4t-core")
    return Platform(machine, None, None)


@dataclass(frozen=True)
class Choices:
    system_site: bool     # make the venv with --system-site-packages
    install_torch: bool   # may bootstrap install torch from the package index
    refuse: bool          # stop: a Jetson without JetPack's PyTorch
    messages: tuple[str, ...]


def choose(found: Platform, has_torch: bool, has_tensorrt: bool) -> Choices:
    """What bootstrap does, given the platform and what the system Python already has."""
    if found.jetson:
        messages = [f"Jetson: L4T {found.l4t} (JetPack {found.jetpack or '?'}, from "
                    f"{found.found_in}); the venv uses the system's packages"]
        if found.jetpack != EXPECTED_JETPACK:
            messages.append(f"expected JetPack {EXPECTED_JETPACK}.x (TensorRT 10, CUDA 12); "
                            "other releases are not tested")
        messages.append("TensorRT: " + ("found (JetPack's python3-libnvinfer)" if has_tensorrt
                                        else "not found: `sudo apt install python3-libnvinfer` "
                                        "for the tensorrt backend"))
        if not has_torch:
            messages.append("no PyTorch in the system Python: install NVIDIA's PyTorch for "
                            "JetPack first (the package index's aarch64 torch has no CUDA and "
                            "is never installed here)")
            return Choices(True, False, True, tuple(messages))
        messages.append("PyTorch: JetPack's (kept; not installed from the package index)")
        return Choices(True, False, False, tuple(messages))
    where = (f"{found.machine} without JetPack" if found.machine == "aarch64"
             else found.machine)
    if has_torch:
        return Choices(True, False, False, (f"{where}: keeping the system's torch "
                                            "(venv with system site packages)",))
    return Choices(False, True, False, (f"{where}: torch from the package index "
                                        "(CPU build unless an NVIDIA GPU is present)",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/"))
    args = parser.parse_args(argv)
    found = detect(args.root)
    has = lambda module: importlib.util.find_spec(module) is not None  # noqa: E731
    choices = choose(found, has("torch"), has("tensorrt"))
    for message in choices.messages:
        print(f"[bootstrap] {message}", file=sys.stderr)
    print(f"JETSON={int(found.jetson)} SYSTEM_SITE={int(choices.system_site)} "
          f"INSTALL_TORCH={int(choices.install_torch)} REFUSE={int(choices.refuse)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
