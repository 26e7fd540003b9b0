"""TensorRT engines cached on the unit, outside the bundle (the bundle verifies as shipped).

An engine is tied to the model, the TensorRT version and the GPU it was built on (and
the DLA core): those make its key. Each engine has a JSON sidecar with the key, the
build options and the engine's own sha256. A stale or foreign engine (another model,
TensorRT version, GPU or DLA core, or altered bytes) is rebuilt by `fod engine`, never
loaded: the runtime refuses to start on one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from .errors import FodError
from .fsutil import atomic_write_bytes, atomic_write_json, sha256_file

SIDECAR_FORMAT = "pharma-fod/engine/1"
SYSTEM_DIR = Path("/var/lib/pharma-fod/engines")  # the service's (jetson/ provisions it)


class EngineMismatch(FodError):
    """A cached engine does not belong to this model, TensorRT or GPU: rebuild it."""


@dataclass(frozen=True)
class EngineKey:
    model_sha256: str  # the ONNX bytes it was built from
    trt_version: str  # tensorrt.__version__ at build time
    gpu: str  # CUDA device name
    dla_core: int  # -1: GPU only
    precision: str  # int8 | fp16 | best (a build option that changes the engine)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()

    def stem(self) -> str:
        return f"{self.model_sha256[:16]}-{self.digest()[:16]}"


def default_cache_dir() -> Path:
    """The service's folder where it exists and is writable, else the user's cache."""
    if SYSTEM_DIR.is_dir() and os.access(SYSTEM_DIR, os.W_OK):
        return SYSTEM_DIR
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pharma-fod" / "engines"


def paths(cache: Path, key: EngineKey) -> tuple:
    """(engine, sidecar) paths of `key` in `cache`."""
    return cache / f"{key.stem()}.engine", cache / f"{key.stem()}.json"


def read_sidecar(path: Path) -> Dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineMismatch(f"{path}: no sidecar for this engine") from None
    except (OSError, ValueError) as e:
        raise EngineMismatch(f"{path}: unreadable sidecar: {e}") from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise EngineMismatch(f"{path}: not a pharma-fod engine sidecar")
    return data


def check(engine: Path, sidecar: Path, key: EngineKey) -> Dict[str, Any]:
    """The sidecar of an engine that matches `key` exactly and is intact; else EngineMismatch
    naming the first difference."""
    meta = read_sidecar(sidecar)
    have = meta.get("key")
    if not isinstance(have, dict):
        raise EngineMismatch(f"{sidecar}: sidecar has no key")
    for field, want in asdict(key).items():
        if have.get(field) != want:
            raise EngineMismatch(
                f"{engine}: built for {field} {have.get(field)!r}, this unit needs {want!r}: "
                "rebuild it with `fod engine`"
            )
    if not engine.is_file():
        raise EngineMismatch(f"{engine}: engine file missing")
    if sha256_file(engine) != meta.get("engine_sha256"):
        raise EngineMismatch(f"{engine}: sha256 differs from its sidecar (altered or cut)")
    return meta


def lookup(cache: Path, key: EngineKey) -> Optional[Path]:
    """The cached engine for `key`, or None when there is none or it does not match."""
    engine, sidecar = paths(cache, key)
    if not sidecar.exists():
        return None
    try:
        check(engine, sidecar, key)
    except EngineMismatch:
        return None
    return engine


def store(cache: Path, key: EngineKey, engine_bytes: bytes, extra: Dict[str, Any]) -> Path:
    """Write engine then sidecar atomically (a reader that finds the sidecar finds the
    engine it names); returns the engine path."""
    cache.mkdir(parents=True, exist_ok=True)
    engine, sidecar = paths(cache, key)
    atomic_write_bytes(engine, engine_bytes)
    meta = {
        "format": SIDECAR_FORMAT,
        "key": asdict(key),
        "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(),
        "engine_bytes": len(engine_bytes),
        **extra,
    }
    atomic_write_json(sidecar, meta)
    return engine
