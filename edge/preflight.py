"""`fod check`: the preflight before a shift. Each check opens the real thing (bundle,
backend or engine, camera, GPIO pins, audit folder, clocks) and says ok, warn or fail
with a one-line detail; `fod run` would stop on any failure, so the shift would too.
The timing check runs containers through the configured model and decision on this
unit: a line that cannot decide before the gate would reject every container.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

from .alarm import ALARM_OUTPUTS
from .config import LineConfig, blind_spots, check_classes, frames_for_model
from .errors import FodError
from .reach import blind_geometry, reach

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    ms: Optional[float] = None  # what a timed check measured (camera: one container's capture)


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


class OpenedModel(NamedTuple):
    backend: Any
    digest: str  # the model file's sha256
    bundle: Any  # edge.bundle.Bundle, verified (its files readable while opened)


@contextlib.contextmanager
def opened_model(cfg: LineConfig) -> Iterator[OpenedModel]:
    """The configured bundle and backend, closed on exit."""
    from .backends.select import open_configured
    from .bundle import open_bundle

    with open_bundle(Path(cfg.model.bundle)) as b:
        backend, digest = open_configured(b, cfg.model)
        try:
            yield OpenedModel(backend, digest, b)
        finally:
            backend.close()


def check_model(cfg: LineConfig, model: Optional[OpenedModel] = None) -> Check:
    """The backend loads the model; for TensorRT, the engine built on this unit matches;
    the model finds the bundle's reference objects (warn where the bundle has none).
    `model`: already opened by `opened_model`, else opened here."""
    from .reference import bundle_reference

    with contextlib.ExitStack() as stack:
        backend, digest, bundle = model or stack.enter_context(opened_model(cfg))
        check_classes(cfg, backend.info.class_names, "line config")
        shape, _ = frames_for_model(cfg, backend.info.input_size, backend.info.input_layout)
        decision, size = cfg.decision.in_frame(shape[0]), (shape[1], shape[0])
        sinks = reach(decision, cfg.camera.frames, size)
        if sinks is None and not blind_spots(cfg):  # else the decision line says so already
            return Check("model", FAIL, str(blind_geometry(decision, cfg.camera.frames, size)))
        w, h = backend.info.input_size
        what = getattr(backend, "engine_path", None) or f"ONNX Runtime ({backend.kernels})"
        detail = f"{what}: {backend.info.arch} {w}x{h}, sha256 {digest[:12]}"
        if sinks is not None:  # what the line's distances let through, in its own frames
            detail += (
                f"; a particle sinking {sinks[0]:.2g}-{sinks[1]:g} px a frame through "
                f"{size[0]}x{size[1]} frames rejects"
            )
        seen = bundle_reference(bundle, backend, cfg.postprocess)
        if seen is None:
            return Check("model", WARN, f"{detail}; no reference frames in the bundle: unchecked")
        again = cfg.model.reference_every_s
        when = f"again every {again:g} s on the line" if again > 0 else "at start only"
        return Check("model", OK, f"{detail}; {seen.line}, {when}")


def check_camera(cfg: LineConfig, frames: Optional[int] = None) -> Check:
    """The camera opens and delivers `frames` frames, each within frame_timeout_ms."""
    from .health import frame_fault
    from .sources import appsink_queues, open_source

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
            last = f.image
        steady = gaps[1:] or gaps  # the first frame also waited for the camera to start
        worst = max(steady)
        # A container's frames come at the camera's rate once its trigger fired.
        capture = cfg.camera.frames * sum(steady) / len(steady)
        detail = f"{cfg.camera.source}: {n} frames {last.shape}, slowest {worst:.1f} ms"
        if worst > cfg.camera.frame_timeout_ms:
            return Check("camera", FAIL, f"{detail} > camera.frame_timeout_ms", capture)
        want = (cfg.camera.height, cfg.camera.width)
        if all(want) and tuple(last.shape[:2]) != want:
            return Check("camera", FAIL, f"{detail}, configured {want[1]}x{want[0]}", capture)
        bad = frame_fault(last, last.shape)  # as the line's capture would judge the last frame
        if bad is not None:  # not 8-bit: every frame refused; black, saturated: a lamp's fault
            why = f"{detail}: {bad[1]}; every container would be rejected"
            return Check("camera", FAIL if bad[0] == "corrupt_frame" else WARN, why, capture)
        # Frames queued from before a trigger must be told apart (V4L2: by the driver's
        # stamps) or not kept (GStreamer: an appsink holding the newest frame only).
        kind, _, rest = cfg.camera.source.partition(":")
        queued = None
        if kind == "gst" and appsink_queues(rest):
            queued = "the pipeline's appsink keeps more than the newest frame: end it with "
            queued += "`appsink drop=true max-buffers=1`"
        elif src.driver_stamps and src.stamps != "driver":
            queued = "the driver's frame timestamps are not of the monotonic clock: a frame "
            queued += "queued from before a trigger would count as the container's"
        if queued is not None:
            return Check("camera", WARN, f"{detail}; {queued}", capture)
        if src.driver_stamps:
            detail += ", stamped by the driver"
        return Check("camera", OK, detail, capture)
    finally:
        src.close()


def check_timing(
    cfg: LineConfig,
    capture_ms: Optional[float] = None,
    containers: int = 3,
    headroom: float = 0.8,
    backend: Any = None,
) -> Check:
    """Containers of `camera.frames` synthetic frames of the configured size through the
    configured backend, tiles and decision, as the runtime judges them; the slowest of
    `containers` (after one to warm up), plus one reference frame's model call where the
    line re-checks them (a container may wait for one), plus the camera's capture time must
    fit in what the gate leaves: `gpio.delay_ms - timing.decision_margin_ms`. Over it fails (every
    container would be rejected late, or as a stall); over `headroom` of it warns.
    `backend`: one `opened_model` already loaded (the preflight's), else opened here."""
    from .bench import synthetic_frames, views_label
    from .decision import decide
    from .detector import EdgeDetector
    from .verdict import judge

    with contextlib.ExitStack() as stack:
        if backend is None:
            backend = stack.enter_context(opened_model(cfg)).backend
        info = backend.info
        shape, grid = frames_for_model(cfg, info.input_size, info.input_layout)
        detector = EdgeDetector(
            backend, info, cfg.postprocess, grid, cfg.model.tile_overlap, cfg.model.mirror
        )
        rule_cfg = cfg.decision.in_frame(shape[0])
        read = synthetic_frames((shape[1], shape[0]), cfg.camera.mono)
        times = []
        for i in range(containers + 1):
            frames = [read() for _ in range(cfg.camera.frames)]
            t0 = time.perf_counter()
            v = judge(frames, detector.detect, lambda d: decide(d, info.class_names, rule_cfg))
            if v.fault is not None:
                return Check("timing", FAIL, f"the model failed on test frames: {v.reason}")
            if i:  # the first pays for allocations and autotuning
                times.append((time.perf_counter() - t0) * 1e3)
        # A container may wait for one reference frame's call (the self-test, when idle).
        ref_ms = 0.0
        if cfg.model.reference_every_s > 0:
            w, h = info.input_size
            t0 = time.perf_counter()
            detector.detect_whole([synthetic_frames((w, h), cfg.camera.mono)()])
            ref_ms = (time.perf_counter() - t0) * 1e3
    worst = max(times)
    budget = cfg.gpio.delay_ms - cfg.timing.decision_margin_ms
    total = worst + ref_ms + (capture_ms or 0.0)
    cut = views_label(f"{grid[0]}x{grid[1]}", cfg.model.mirror)
    what = f"{cfg.camera.frames} frames {shape[1]}x{shape[0]}{cut}: model + decision {worst:.0f} ms"
    if ref_ms:
        what += f" + a reference frame {ref_ms:.0f} ms"
    if capture_ms is None:
        what += " (capture not measured)"
    else:
        what += f" + capture {capture_ms:.0f} ms"
    # Capture and inference are stages of their own: the slower one paces the line. The
    # gate bounds it too: containers closer than one pulse plus the debounce are rejected
    # as trigger_conflict (the gate cannot tell them apart).
    rate = 60_000 / max(worst, capture_ms or 0.0)
    gate_rate = 60_000 / (cfg.gpio.pulse_ms + cfg.gpio.trigger_bounce_ms)
    pace = f"keeps up with {min(rate, gate_rate):.0f} containers/min"
    if gate_rate < rate:
        pace += " (the gate's bound: gpio.pulse_ms + gpio.trigger_bounce_ms between triggers)"
    detail = (
        f"{what} = {total:.0f} ms of the {budget:.0f} ms before the gate "
        f"(gpio.delay_ms - timing.decision_margin_ms); {pace}"
    )
    if total > budget:
        return Check("timing", FAIL, f"{detail}: every container would be rejected late", worst)
    if total > headroom * budget:
        return Check("timing", WARN, f"{detail}: little headroom", worst)
    return Check("timing", OK, detail, worst)


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
    detail = f"{cfg.gpio.pin_factory or 'given factory'}: claimed {pins}"
    if g.alarm_pin:  # how to wire the alarm input it drives
        detail += f"; alarm output {g.alarm_pin}: {ALARM_OUTPUTS[g.alarm_energise_to]}"
    if g.energise_to == "reject" and not io.alarm_when_off:
        return Check(
            "gpio",
            WARN,
            f"{detail}; gpio.energise_to = 'reject': a dead unit fires no reject pulse and, with "
            "gpio.alarm_energise_to = 'alarm', shows no alarm either (set it to 'ready' or "
            "'heartbeat')",
        )
    return Check("gpio", OK, detail)


def check_audit(cfg: LineConfig) -> Check:
    folder = Path(cfg.audit.folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".preflight-"):
        pass
    free = shutil.disk_usage(folder).free
    detail = f"{folder}: writable, {free / 2**20:.0f} MiB free"
    if cfg.audit.signing_key:  # unreadable (owner, mode, a restore): the runtime would not start
        from .signing import load_private_key

        load_private_key(Path(cfg.audit.signing_key))
        detail += f", checkpoints signed with {cfg.audit.signing_key}"
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


def check_software(constraints: Optional[Path] = None) -> Check:
    """What `fod run` would put in its `start` event: versions and the runtime's code hash;
    with `constraints` (the fleet's validated `pip freeze`), fails on any version off it."""
    from .software import drift, read_pins, software_line

    if constraints is None:
        return Check("software", OK, software_line())
    pins = read_pins(constraints)
    off = drift(pins)
    if off:
        return Check("software", FAIL, f"not as pinned by {constraints}: {', '.join(off)}")
    return Check("software", OK, f"{software_line()}; all {len(pins)} as pinned by {constraints}")


def check_decision(cfg: LineConfig) -> Check:
    """Whether any detection could reject a container (`fod run` refuses a line that
    could only pass them)."""
    spots = blind_spots(cfg)
    if spots:
        return Check("decision", FAIL, "no detection could reject a container: " + "; ".join(spots))
    d = cfg.decision
    # Not blind, so a positive min_evidence comes with a positive moving_weight.
    need = 1 if d.min_evidence <= 0 else max(1, math.ceil(d.min_evidence / d.moving_weight - 1e-9))
    return Check(
        "decision",
        OK,
        f"a moving particle rejects from {need} of {cfg.camera.frames} frames "
        f"(min_evidence {d.min_evidence:g}, moving_weight {d.moving_weight:g})",
    )


def check_metrics(cfg: LineConfig) -> Check:
    if cfg.metrics.port == 0:
        return Check("metrics", OK, "off")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((cfg.metrics.address, cfg.metrics.port))
    return Check("metrics", OK, f"{cfg.metrics.address}:{cfg.metrics.port} free")


def preflight(
    cfg: LineConfig, pin_factory: Any = None, constraints: Optional[Path] = None
) -> List[Check]:
    done: Dict[str, Check] = {}
    with contextlib.ExitStack() as stack:
        loaded: List[Any] = []  # the model check's backend, kept for the timing check

        def model() -> Check:
            opened = stack.enter_context(opened_model(cfg))
            loaded.append(opened.backend)
            return check_model(cfg, opened)

        def timing() -> Check:
            if done["model"].status == FAIL:  # its reason is on the model's line already
                return Check("timing", FAIL, "not timed: the model did not load")
            # The model loaded once (a TensorRT engine is seconds and memory on a Jetson),
            # timed with the camera's capture just measured.
            return check_timing(cfg, done["camera"].ms, backend=loaded[0])

        checks = [
            ("bundle", lambda: check_bundle(cfg)),
            ("decision", lambda: check_decision(cfg)),
            ("model", model),
            ("camera", lambda: check_camera(cfg)),
            ("timing", timing),
            ("gpio", lambda: check_gpio(cfg, pin_factory)),
            ("audit", lambda: check_audit(cfg)),
            ("clock", lambda: check_clock()),
            ("metrics", lambda: check_metrics(cfg)),
            ("software", lambda: check_software(constraints)),
        ]
        for name, fn in checks:
            done[name] = _run(name, fn)
    return list(done.values())


def summary(checks: List[Check]) -> Dict[str, Any]:
    failures = [c.name for c in checks if c.status == FAIL]
    return {
        "ok": not failures,
        "failures": failures,
        "checks": [asdict(c) for c in checks],
    }
