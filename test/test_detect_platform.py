"""scripts/detect_platform.py: how bootstrap tells a Jetson with JetPack from any other
machine, and what it does on each; the systems are fake root folders."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "detect_platform.py"
spec = importlib.util.spec_from_file_location("detect_platform", SCRIPT)
detect_platform = importlib.util.module_from_spec(spec)
sys.modules["detect_platform"] = detect_platform  # dataclasses look their module up
spec.loader.exec_module(detect_platform)

TEGRA_RELEASE = ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, "
                 "EABI: aarch64, DATE: Fri Sep 13 04:36:44 UTC 2024\n")
DPKG_STATUS = """Package: libc6
Status: install ok installed
Version: 2.35-0ubuntu3.8

Package: nvidia-l4t-core
Status: install ok installed
Architecture: arm64
Version: 36.3.0-20240719161631
Description: NVIDIA Core Package
 more description
"""


def system(tmp_path, tegra=None, dpkg=None) -> Path:
    if tegra is not None:
        (tmp_path / "etc").mkdir()
        (tmp_path / "etc" / "nv_tegra_release").write_text(tegra)
    if dpkg is not None:
        (tmp_path / "var" / "lib" / "dpkg").mkdir(parents=True)
        (tmp_path / "var" / "lib" / "dpkg" / "status").write_text(dpkg)
    return tmp_path


def test_jetson_from_the_tegra_release_file(tmp_path):
    found = detect_platform.detect(system(tmp_path, tegra=TEGRA_RELEASE), "aarch64")
    assert found.jetson and found.l4t == "36.4.0" and found.jetpack == "6"
    assert found.found_in.endswith("etc/nv_tegra_release")


def test_jetson_from_the_l4t_core_package(tmp_path):
    found = detect_platform.detect(system(tmp_path, dpkg=DPKG_STATUS), "aarch64")
    assert found.jetson and found.l4t == "36.3.0" and found.found_in == "package nvidia-l4t-core"


@pytest.mark.parametrize("machine, files", [
    ("aarch64", {}),                                          # a Raspberry Pi, a Graviton
    ("aarch64", {"dpkg": DPKG_STATUS.replace("nvidia-l4t-core", "nvidia-l4t-kernel")}),
    ("aarch64", {"dpkg": DPKG_STATUS.replace("install ok installed\nArch",
                                             "deinstall ok config-files\nArch")}),
    ("x86_64", {"tegra": TEGRA_RELEASE}),                     # a copied file on a desktop
])
def test_other_machines_are_not_jetsons(tmp_path, machine, files):
    assert not detect_platform.detect(system(tmp_path, **files), machine).jetson


def test_on_a_jetson_the_system_torch_and_tensorrt_are_used_never_the_index(tmp_path):
    jetson = detect_platform.detect(system(tmp_path, tegra=TEGRA_RELEASE), "aarch64")
    choices = detect_platform.choose(jetson, has_torch=True, has_tensorrt=True)
    assert (choices.system_site, choices.install_torch, choices.refuse) == (True, False, False)
    assert any("L4T 36.4.0 (JetPack 6" in m for m in choices.messages)
    assert any("TensorRT: found" in m for m in choices.messages)

    no_torch = detect_platform.choose(jetson, has_torch=False, has_tensorrt=False)
    assert (no_torch.install_torch, no_torch.refuse) == (False, True)
    assert any("NVIDIA's PyTorch for JetPack" in m for m in no_torch.messages)
    assert any("python3-libnvinfer" in m for m in no_torch.messages)


def test_older_jetpack_is_named(tmp_path):
    old = detect_platform.detect(system(tmp_path, tegra=TEGRA_RELEASE.replace("R36", "R35")),
                                 "aarch64")
    choices = detect_platform.choose(old, has_torch=True, has_tensorrt=True)
    assert any("expected JetPack 6.x" in m for m in choices.messages)


def test_without_jetpack_the_cpu_path(tmp_path):
    plain = detect_platform.detect(system(tmp_path), "aarch64")
    choices = detect_platform.choose(plain, has_torch=False, has_tensorrt=False)
    assert (choices.system_site, choices.install_torch, choices.refuse) == (False, True, False)
    assert "aarch64 without JetPack" in choices.messages[0]
    kept = detect_platform.choose(plain, has_torch=True, has_tensorrt=False)
    assert (kept.system_site, kept.install_torch) == (True, False)


def test_the_script_prints_what_bootstrap_evals(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--root", str(system(tmp_path))],
                          capture_output=True, text=True, check=True)
    assignments = dict(item.split("=") for item in done.stdout.split())
    assert set(assignments) == {"JETSON", "SYSTEM_SITE", "INSTALL_TORCH", "REFUSE"}
    assert assignments["JETSON"] == "0" and "[bootstrap]" in done.stderr
