"""What software a unit runs, named: the versions of the packages the runtime runs on, the
runtime's own code by its hash, and how they compare with a fleet's validated pins (a
`pip freeze`). Recorded in each run's `start` event, `fod check` and `fod bench`."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
from importlib import metadata
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .errors import FodError

PACKAGE = Path(__file__).resolve().parent  # edge/


def code_digest(root: Path = PACKAGE) -> str:
    """sha256 over the runtime's own source (every .py under `root`, by relative path): the
    version string stays the same across commits, this names the code that ran."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix().encode()
        data = path.read_bytes()
        h.update(len(rel).to_bytes(4, "big") + rel + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


# What the runtime computes and drives with: (name, import name, distributions). A module
# already imported answers for itself (the code that runs); else pip's record, without
# importing it (TensorRT loads CUDA). JetPack brings OpenCV and TensorRT through apt.
SOFTWARE: Tuple[Tuple[str, str, Tuple[str, ...]], ...] = (
    ("pharma-fod", "", ("pharma-fod",)),
    ("numpy", "numpy", ("numpy",)),
    ("opencv", "cv2", ("opencv-python-headless", "opencv-python")),
    ("onnxruntime", "onnxruntime", ("onnxruntime", "onnxruntime-gpu")),
    ("tensorrt", "tensorrt", ("tensorrt",)),
    ("gpiozero", "gpiozero", ("gpiozero",)),
    ("Jetson.GPIO", "Jetson.GPIO", ("Jetson.GPIO",)),
)


def _version(module: str, dists: Tuple[str, ...]) -> Optional[str]:
    loaded = getattr(sys.modules.get(module), "__version__", None) if module else None
    if isinstance(loaded, str):
        return loaded
    for d in dists:
        try:
            return metadata.version(d)
        except metadata.PackageNotFoundError:
            continue
    return None


def software() -> Dict[str, Optional[str]]:
    """{name: version} of Python and the packages the runtime runs on; None: not installed."""
    out: Dict[str, Optional[str]] = {"python": platform.python_version()}
    out.update((name, _version(module, dists)) for name, module, dists in SOFTWARE)
    return out


def software_line() -> str:
    """'python 3.11.7, pharma-fod 0.1.0, numpy 2.4.6, ..., edge code sha256 <64 hex>'."""
    sw = ", ".join(f"{k} {v}" for k, v in software().items() if v is not None)
    return f"{sw}, edge code sha256 {code_digest()}"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503: Jetson.GPIO = jetson-gpio


def read_pins(path: Path) -> Dict[str, str]:
    """A constraints file as `pip freeze` writes it ('name==version', or 'name @ URL' for a
    package installed from a file or URL - a Jetson's onnxruntime-gpu wheel - and # comments)
    -> {canonical name: version, or '@ URL'}; FodError naming the file and line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FodError(f"{path}: cannot read the pinned versions: {e}") from None
    pins = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", line).strip()  # a URL's own '#' stays
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:==\s*(\S+)|@\s*(\S+))", line)
        if m is None:
            raise FodError(f"{path}: line {i}: not an exact pin 'name==version': {line!r}")
        pins[_canonical(m.group(1))] = m.group(2) or f"@ {m.group(3)}"
    return pins


def _installed_from(dist: metadata.Distribution) -> Optional[str]:
    """The URL a distribution was installed from (PEP 610 direct_url.json), if any."""
    try:
        return str(json.loads(dist.read_text("direct_url.json") or "null")["url"])
    except (ValueError, KeyError, TypeError):
        return None


def drift(pins: Dict[str, str]) -> List[str]:
    """Each pin the installed packages differ from: 'numpy 2.4.6 (pinned 1.24.4)', 'pycuda
    not installed (pinned 2024.1)'. The first of a name on sys.path counts (the venv's)."""
    installed: Dict[str, metadata.Distribution] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(_canonical(name), dist)
    out = []
    for name, want in sorted(pins.items()):
        got = installed.get(name)
        if got is None:
            out.append(f"{name} not installed (pinned {want})")
        elif want.startswith("@ ") and _installed_from(got) != want[2:]:
            src = _installed_from(got) or "an index"
            out.append(f"{name} {got.version} from {src} (pinned {want})")
        elif not want.startswith("@ ") and got.version != want:
            out.append(f"{name} {got.version} (pinned {want})")
    return out
