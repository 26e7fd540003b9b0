"""`fod check`: the preflight before a shift. Each check opens the real thing (bundle,
backend or engine, camera, GPIO pins, audit folder, clocks) and says ok, warn or fail
with a one-line detail; `fod run` would stop on any failure, so the shift would too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from .config import LineConfig, check_classes
from .errors import FodError

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def _run(name: str, fn: Callable[[], Check]) -> Check:
    """A check that raises a user error fails with its message; others are bugs."""
    try:
        return fn()
    except (FodError, OSError) as e:
        return Check(name, FAIL, str(e))
    except ImportError as e:  # e.g. model.backend = "tensorrt" on a unit without TensorRT
        return Check(name, FAIL, f"cannot import {e.name or e}: not installed on this unit")


def check_bundle(cfg: LineConfig) -> Check:
    from .bundle import open_bundle

    key = Path(cfg.model.public_key) if cfg.model.public_key else None
    if key is None and not cfg.model.allow_unsigned:
        return Check("bundle", FAIL, "model.public_key is not set (fod run refuses to start)")
    with open_bundle(Path(cfg.model.bundle), key) as b:
        signed = "signature verified" if key else "UNSIGNED (model.allow_unsigned)"
        detail = f"{cfg.model.bundle}: {len(b.manifest['files'])} files verified, {signed}"
        return Check("bundle", OK if key else WARN, detail)


def check_model(cfg: LineConfig) -> Check:
    """The backend loads the model; for TensorRT, the engine built on this unit matches."""
    from .backends.select import open_configured
    from .bundle import open_bundle

    with open_bundle(Path(cfg.model.bundle)) as b:
        backend, digest = open_configured(b, cfg.model)
        try:
            check_classes(cfg, backend.info.class_names, "line config")
            w, h = backend.info.input_size
            what = getattr(backend, "engine_path", None) or f"ONNX Runtime ({backend.kernels})"
            return Check("model", OK, f"{what}: {backend.info.arch} {w}x{h}, sha256 {digest[:12]}")
        finally:
            backend.close()


def check_camera(cfg: LineConfig, frames: Optional[int] = None) -> Check:
    """The camera opens and delivers `frames` frames, each within frame_timeout_ms."""
    from .sources import open_source

    if cfg.camera.source == "sim":
        return Check("camera", WARN, "camera.source is 'sim': simulation only, no camera checked")
    n = frames or cfg.camera.frames
    src = open_source(cfg.camera.source, cfg.camera.mono)
    try:
        gaps = []
        t = time.monotonic()
        for i in range(n):
            f = src.read()
            now = time.monotonic()
            if f is None:
                return Check("camera", FAIL, f"{cfg.camera.source}: no frame {i + 1} of {n}")
            gaps.append((now - t) * 1e3)
            t = now
            shape = f.image.shape
        worst = max(gaps[1:] or gaps)
        detail = f"{cfg.camera.source}: {n} frames {shape}, slowest {worst:.1f} ms"
        if worst > cfg.camera.frame_timeout_ms:
            return Check("camera", FAIL, f"{detail} > camera.frame_timeout_ms")
        want = (cfg.camera.height, cfg.camera.width)
        if all(want) and tuple(shape[:2]) != want:
            return Check("camera", FAIL, f"{detail}, configured {want[1]}x{want[0]}")
        return Check("camera", OK, detail)
    finally:
        src.close()


def check_gpio(cfg: LineConfig, pin_factory: Any = None) -> Check:
    from .gpio import LineIO

    if cfg.gpio.pin_factory == "mock" and pin_factory is None:
        return Check("gpio", WARN, "gpio.pin_factory is 'mock': simulation only")
    from gpiozero import GPIOZeroError

    g = cfg.gpio
    pins = [p for p in (g.ejector_pin, g.alarm_pin, g.trigger_pin, g.gate_feedback_pin) if p]
    try:
        with LineIO(g, pin_factory) as io:  # the gate output is claimed off
            stuck = io.gate_stuck()
    except GPIOZeroError as e:  # pin in use, no such pin, no access to the chip
        return Check("gpio", FAIL, f"cannot claim {pins}: {type(e).__name__}: {e}")
    if stuck:  # the output is off (LineIO's initial value) and the gate says energised
        return Check(
            "gpio",
            FAIL,
            f"gate feedback {g.gate_feedback_pin} is on with the gate output off: a welded "
            "relay, a short, or the feedback wired inverted",
        )
    return Check("gpio", OK, f"{cfg.gpio.pin_factory or 'given factory'}: claimed {pins}")


def check_audit(cfg: LineConfig) -> Check:
    folder = Path(cfg.audit.folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".preflight-"):
        pass
    free = shutil.disk_usage(folder).free
    detail = f"{folder}: writable, {free / 2**20:.0f} MiB free"
    if free < cfg.audit.min_free_bytes:
        need = cfg.audit.min_free_bytes / 2**20
        return Check("audit", FAIL, f"{detail}, below audit.min_free_bytes ({need:.0f} MiB)")
    return Check("audit", OK, detail)


def ntp_synchronized() -> Optional[bool]:
    exe = shutil.which("timedatectl")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"yes": True, "no": False}.get(out)


def check_clock(synced: Optional[bool] = None) -> Check:
    """The monotonic clock ticks forward (timers and the gate schedule use it) and the wall
    clock is synchronised (audit rows carry wall time)."""
    samples = [time.monotonic_ns() for _ in range(1000)]
    if any(b < a for a, b in zip(samples, samples[1:])) or samples[-1] == samples[0]:
        return Check("clock", FAIL, "the monotonic clock does not advance")
    res = time.get_clock_info("monotonic").resolution
    synced = ntp_synchronized() if synced is None else synced
    if synced is False:
        return Check("clock", FAIL, "wall clock not synchronised (timedatectl: NTP no)")
    how = "synchronised" if synced else "sync unknown (no timedatectl)"
    return Check("clock", OK if synced else WARN, f"monotonic ({res * 1e9:.0f} ns), wall {how}")


def check_metrics(cfg: LineConfig) -> Check:
    if cfg.metrics.port == 0:
        return Check("metrics", OK, "off")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((cfg.metrics.address, cfg.metrics.port))
    return Check("metrics", OK, f"{cfg.metrics.address}:{cfg.metrics.port} free")


def preflight(cfg: LineConfig, pin_factory: Any = None) -> List[Check]:
    checks = [
        ("bundle", lambda: check_bundle(cfg)),
        ("model", lambda: check_model(cfg)),
        ("camera", lambda: check_camera(cfg)),
        ("gpio", lambda: check_gpio(cfg, pin_factory)),
        ("audit", lambda: check_audit(cfg)),
        ("clock", lambda: check_clock()),
        ("metrics", lambda: check_metrics(cfg)),
    ]
    return [_run(name, fn) for name, fn in checks]


def summary(checks: List[Check]) -> Dict[str, Any]:
    failures = [c.name for c in checks if c.status == FAIL]
    return {
        "ok": not failures,
        "failures": failures,
        "checks": [asdict(c) for c in checks],
    }
