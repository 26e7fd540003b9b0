"""Assemble the runtime from a line config: bundle -> backend -> detector, GPIO, audit, metrics.

One context manager owns every resource and releases them on any exit path; the gate
output is driven to its safe state (off: no release) on each of them.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from .audit import AuditLog
from .backends import StagedBackend
from .bundle import open_bundle
from .config import LineConfig, check_classes, frames_for_model
from .detector import EdgeDetector
from .device_info import unit
from .errors import FodError
from .fsutil import atomic_write_json
from .gpio import LineIO
from .metrics import RuntimeMetrics
from .reach import BlindDecision, blind_geometry
from .reference import bundle_reference
from .runtime import Job, Outcome, Runtime
from .self_test import SelfTest
from .software import code_digest, software

log = logging.getLogger(__name__)
LAST_BUNDLE = "last-bundle.json"  # beside the audit files: the newest version this unit ran
ROLLBACK_PERMIT = "rollback-permit.json"  # one start of an older bundle, by `fod rollout`


def _version_key(v: str) -> Tuple[Any, ...]:
    """'2026.11.25' -> (2026, 11, 25); numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+]", v))


def check_rollback(manifest: dict, folder: Path, allow: bool) -> None:
    """Refuse a bundle older than the newest one this unit ran (unless told), then record it."""
    path = folder / LAST_BUNDLE
    version = str(manifest.get("version", ""))
    try:
        last: Dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError) as e:
        raise FodError(f"{path}: unreadable: {e}") from None
    same = bool(last) and last.get("name") == manifest.get("name")
    permit = folder / ROLLBACK_PERMIT
    if same and _version_key(version) < _version_key(str(last.get("version", ""))):
        granted = _read_permit(permit, manifest)
        if not allow and granted is None:
            raise FodError(
                f"bundle {manifest.get('name')} {version} is older than {last['version']}, "
                "which this unit ran last: pass --allow-rollback to roll back on purpose"
            )
        log.warning(
            "rolling back bundle %s %s -> %s (%s)",
            manifest.get("name"),
            last["version"],
            version,
            "--allow-rollback" if granted is None else f"permit: {granted}",
        )
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"name": manifest.get("name"), "version": version})
    permit.unlink(missing_ok=True)  # a permit serves one start of the bundle it names


def _read_permit(path: Path, manifest: dict) -> Optional[str]:
    """The reason of a rollback permit (written by `fod rollout` when a new bundle failed
    its health probe) naming exactly this bundle, else None."""
    try:
        p = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(p, dict):
        return None
    if (p.get("name"), p.get("version")) != (manifest.get("name"), manifest.get("version")):
        return None
    return f"{p.get('by', '?')} at {p.get('at', '?')}: {p.get('reason', '')}"


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep what startup built out of the garbage collector's full passes while the line runs.

    A full pass holds the GIL while it scans every tracked object: 14-25 ms for an edge
    process's ~39k objects on a 2-core EPYC, longer than a short gate pulse's tolerance, so
    the pulse thread would miss its gate (a false reject). Frozen, a pass scans only what
    the run itself made (about 1 ms after 100 containers)."""
    gc.collect()  # garbage from startup is freed now, not pinned for the whole run
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def line_runtime(
    cfg: LineConfig,
    pin_factory: Any = None,
    wrap_backend: Optional[Callable[[Any], Any]] = None,
    on_outcome: Optional[Callable[[Outcome], None]] = None,
    allow_rollback: bool = False,
    audit_authorizer: Optional[Callable[..., int]] = None,
    require_reject: bool = False,
) -> Iterator[Runtime]:
    """Yield a running Runtime; `wrap_backend` and `audit_authorizer` let simulation inject
    faults where they happen (the backend call, the SQLite INSERT). `require_reject` (the
    production loop) refuses a decision under which no moving particle in these frames
    could reject (edge/reach.py); experiments may want one that rejects on faults alone."""
    from .backends.select import open_configured

    if cfg.model.public_key is None and not cfg.model.allow_unsigned:
        raise FodError(
            "model.public_key is not set: the unit must verify the bundle's signature "
            "(or set model.allow_unsigned = true for commissioning)"
        )
    pk = Path(cfg.model.public_key) if cfg.model.public_key else None
    if pk is None:
        log.warning("running an UNSIGNED bundle (model.allow_unsigned = true)")
    with contextlib.ExitStack() as stack:
        bundle = stack.enter_context(open_bundle(Path(cfg.model.bundle), pk))
        backend, model_hash = open_configured(bundle, cfg.model)
        stack.callback(backend.close)
        shape, grid = frames_for_model(cfg, backend.info.input_size, backend.info.input_layout)
        check_classes(cfg, backend.info.class_names, "line config")
        if require_reject:
            blind = blind_geometry(
                cfg.decision.in_frame(shape[0]), cfg.camera.frames, (shape[1], shape[0])
            )
            if blind is not None:
                raise BlindDecision(blind)
        # A model blind to its own reference objects would accept every container.
        seen = bundle_reference(bundle, backend, cfg.postprocess)
        if seen is None:
            log.warning("the bundle has no reference frames: the model's sight is unchecked")
        else:
            log.info("reference frames: %s", seen.line)
        metrics = RuntimeMetrics()  # before anything is written: a busy port leaves no trace
        try:
            metrics.serve(cfg.metrics.port, cfg.metrics.address)
        except OSError as e:
            raise FodError(f"metrics.port {cfg.metrics.port}: cannot listen: {e}") from None
        stack.callback(metrics.close)
        # The audit folder's one writer, before its state is written or a pin is touched: a
        # second runtime beside a running one is refused having changed neither.
        audit = stack.enter_context(AuditLog(cfg.audit, audit_authorizer))
        check_rollback(bundle.manifest, cfg.audit.folder, allow_rollback)
        detector = EdgeDetector(
            wrap_backend(backend) if wrap_backend else backend,
            backend.info,
            cfg.postprocess,
            grid,
            cfg.model.tile_overlap,
            cfg.model.mirror,
        )
        io = stack.enter_context(LineIO(cfg.gpio, pin_factory))
        if cfg.gpio.energise_to == "reject":
            log.warning(
                "gpio.energise_to = 'reject': a dead or hung process fires no reject pulse and "
                "containers PASS; the machine needs its own interlock on the alarm/watchdog%s",
                ""
                if cfg.gpio.alarm_energise_to != "alarm"
                else " (gpio.alarm_energise_to = 'ready' or 'heartbeat' makes a dead unit show "
                "the alarm too)",
            )
        # Taken before a stage starts: a record that cannot be made stops the start here.
        start = start_record(cfg, bundle.manifest, backend, model_hash, cfg.digest(), io)
        runtime = Runtime(
            cfg,
            detector,
            io,
            audit,
            metrics,
            model_hash,
            shape,
            on_outcome=on_outcome,
            # ... and one that goes blind mid-shift, as soon as a round of them shows it.
            self_test=(
                SelfTest(seen, cfg.model.reference_every_s)
                if seen is not None and cfg.model.reference_every_s > 0
                else None
            ),
        )
        stack.callback(runtime.close)
        log.info("start: %s", json.dumps(start))
        runtime.events.post("start", start, audit.last_seq)  # written by the supervisor
        stack.enter_context(frozen_heap())
        yield runtime


def start_record(
    cfg: LineConfig,
    manifest: Dict[str, Any],
    backend: StagedBackend,
    model_hash: str,
    config_hash: str,
    io: Any,
) -> Dict[str, Any]:
    """The `start` event's detail: what decides the containers recorded after it - the
    unit, the software (versions, and the runtime's code by its hash), the backend, the
    bundle and model, the config, the pins."""
    return {
        "unit": unit(),
        "software": software(),
        "edge_code_sha256": code_digest(),
        "backend": backend.describe(),
        "precision": cfg.model.precision,
        "bundle": f"{manifest.get('name')} {manifest.get('version')}",
        "model_sha256": model_hash,
        "config_sha256": config_hash,
        "pins": type(io.factory).__name__,
    }


def container_run(last_seq: int) -> str:
    """The prefix of a run's container ids: "r" and the audit seq its first row will take.
    Unique in the trail across restarts (the count starts again at 1 on each): a run that
    recorded anything moved the trail's seq on, and one that recorded nothing left no id
    to clash with."""
    return f"r{last_seq + 1}"


def run_forever(
    cfg: LineConfig,
    stop: threading.Event,
    rate_per_min: Optional[float] = None,
    max_containers: Optional[int] = None,
    pin_factory: Any = None,
    allow_rollback: bool = False,
) -> Runtime:
    """The production loop: one camera, triggers from the GPIO input (or a timer), until `stop`
    or a failed stage. The trigger handler only timestamps and submits: capture,
    inference and the audit run on the runtime's own threads."""
    import itertools
    import time

    from .sources import open_source

    if cfg.camera.source == "sim":
        raise FodError(
            "camera.source is 'sim': use `fod simulate`, or set a camera in the line config"
        )
    if cfg.gpio.trigger_pin is None and not rate_per_min:
        raise FodError(
            "no gpio.trigger_pin in the line config: give a timer rate (--rate) to run without one"
        )
    camera = open_source(cfg.camera.source, cfg.camera.mono)
    counter = itertools.count(1)
    submitted = threading.Event() if max_containers else None
    try:
        with line_runtime(
            cfg, pin_factory, allow_rollback=allow_rollback, require_reject=True
        ) as rt:
            run = container_run(rt.audit.last_seq)

            def trigger(t: float) -> None:
                n = next(counter)
                if max_containers and n > max_containers:
                    return
                rt.submit(Job(f"{run}-{n:06d}", t, camera.read))
                if submitted is not None and max_containers is not None and n >= max_containers:
                    submitted.set()

            if cfg.gpio.trigger_pin is not None:
                rt.io.on_trigger(trigger)
            period = 60.0 / rate_per_min if rate_per_min else None
            nxt = time.monotonic()
            while not stop.is_set() and rt.failed is None:
                if submitted is not None and submitted.is_set():
                    break
                if period is None:
                    stop.wait(0.5)
                    continue
                nxt += period
                trigger(time.monotonic())
                stop.wait(max(0.0, nxt - time.monotonic()))
            rt.drain(timeout=30)
            return rt
    finally:
        camera.close()
