"""What a benchmark ran on, recorded with its figures: board, L4T/JetPack, TensorRT, GPU,
nvpmodel mode and whether the clocks are locked (Jetson latency is not repeatable
without `nvpmodel` and `jetson_clocks`). Every reader takes a root folder, so tests
read a fake /etc and /sys."""

from __future__ import annotations

import platform
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, Dict, List, Optional

from .software import software

# L4T major release -> JetPack major (NVIDIA's release notes); finer mapping is not stable.
JETPACK_BY_L4T = {"32": "4", "34": "5", "35": "5", "36": "6", "38": "7"}


def l4t_release(root: Path = Path("/")) -> Optional[str]:
    """'R35.4.1' from /etc/nv_tegra_release ('# R35 (release), REVISION: 4.1, ...')."""
    try:
        text = (root / "etc/nv_tegra_release").read_text(errors="replace")
    except OSError:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def board(root: Path = Path("/")) -> str:
    try:  # Jetson and other device-tree boards
        return (root / "proc/device-tree/model").read_text(errors="replace").strip("\0\n ")
    except OSError:
        pass
    try:
        for line in (root / "proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _read_int(p: Path) -> Optional[int]:
    try:
        return int(p.read_text().strip())
    except (OSError, ValueError):
        return None


def clocks_locked(root: Path = Path("/")) -> Optional[bool]:
    """True when every CPU's and the GPU's (devfreq) min frequency equals its max, which is
    what `jetson_clocks` sets; None when the kernel exposes no frequency scaling."""
    pairs = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        pairs.append((_read_int(cpu / "scaling_min_freq"), _read_int(cpu / "scaling_max_freq")))
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if "gpu" in dev.name or "gv11b" in dev.name or "ga10b" in dev.name:
            pairs.append((_read_int(dev / "min_freq"), _read_int(dev / "max_freq")))
    pairs = [(lo, hi) for lo, hi in pairs if lo is not None and hi is not None]
    if not pairs:
        return None
    return all(lo == hi for lo, hi in pairs)


def nvpmodel_mode() -> Optional[str]:
    """The power mode name from `nvpmodel -q` (Jetson only)."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", out)
    return m.group(1) if m else None


def tensorrt_version() -> Optional[str]:
    try:
        import tensorrt as trt
    except ImportError:
        return None
    version = getattr(trt, "__version__", None)  # tensorrt-stubs alone: an empty namespace
    return version if isinstance(version, str) else None


def unit(root: Path = Path("/")) -> str:
    """'line3-unit2 (NVIDIA Jetson Orin Nano Developer Kit, L4T R36.4.3)'."""
    l4t = l4t_release(root)
    return f"{socket.gethostname()} ({board(root)}" + (f", L4T {l4t})" if l4t else ")")


def device_info(gpu: Optional[str] = None, root: Path = Path("/")) -> Dict[str, Any]:
    """The record stored with every `fod bench` result; `warnings` says what makes the
    figures less trustworthy."""
    l4t = l4t_release(root)
    jetpack = JETPACK_BY_L4T.get(l4t[1:].split(".")[0]) if l4t else None
    locked = clocks_locked(root)
    warnings: List[str] = []
    if l4t is not None and locked is not True:
        warnings.append(
            "clocks are not locked: run `sudo nvpmodel -m <mode>` and `sudo jetson_clocks` "
            "before benchmarking, or latency varies from run to run"
        )
    return {
        "board": board(root),
        "l4t": l4t,
        "jetpack": jetpack,
        "tensorrt": tensorrt_version(),
        "gpu": gpu,
        "nvpmodel": nvpmodel_mode() if l4t else None,
        "clocks_locked": locked,
        "python": platform.python_version(),
        "software": software(),
        "warnings": warnings,
    }
