"""Assemble the runtime from a line config: bundle -> backend -> detector, GPIO, audit, metrics.

One context manager owns every resource and releases them on any exit path.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterator, Optional

from .audit import AuditLog
from .bundle import open_bundle
from .config import LineConfig
from .detector import EdgeDetector
from .errors import FodError
from .gpio import LineIO
from .metrics import RuntimeMetrics
from .runtime import Job, Runtime


@contextlib.contextmanager
def line_runtime(
    cfg: LineConfig,
    pin_factory: Any = None,
    wrap_backend: Optional[Callable[[Any], Any]] = None,
) -> Iterator[Runtime]:
    """Yield a running Runtime; `wrap_backend` lets simulation inject faults into inference."""
    from pathlib import Path

    from .backends.onnxruntime_backend import OnnxRuntimeBackend

    pk = Path(cfg.model.public_key) if cfg.model.public_key else None
    with contextlib.ExitStack() as stack:
        bundle = stack.enter_context(open_bundle(Path(cfg.model.bundle), pk))
        if cfg.model.backend != "onnxruntime":
            raise FodError(
                f"model.backend {cfg.model.backend!r}: only 'onnxruntime' is in this build "
                "(the TensorRT backend has its own issue)"
            )
        roles = {
            "fp32": ("fp32",),
            "int8": ("int8_cpu", "int8"),
            "auto": ("fp32", "int8_cpu", "int8"),
        }[cfg.model.precision]
        path = next((bundle.file(r) for r in roles if bundle.file(r) is not None), None)
        if path is None:
            raise FodError(f"{cfg.model.bundle}: no {cfg.model.precision} model in the bundle")
        backend = stack.enter_context(OnnxRuntimeBackend(path, threads=cfg.model.threads))
        model_hash = bundle.manifest["files"][path.name]["sha256"]
        detector = EdgeDetector(
            wrap_backend(backend) if wrap_backend else backend, backend.info, cfg.postprocess
        )
        io = stack.enter_context(LineIO(cfg.gpio, pin_factory))
        audit = stack.enter_context(AuditLog(cfg.audit))
        metrics = RuntimeMetrics()
        metrics.serve(cfg.metrics.port)
        stack.callback(metrics.close)
        runtime = Runtime(cfg, detector, io, audit, metrics, model_hash)
        stack.callback(runtime.close)
        yield runtime


def run_forever(
    cfg: LineConfig,
    stop: threading.Event,
    rate_per_min: Optional[float] = None,
    max_containers: Optional[int] = None,
    pin_factory: Any = None,
) -> Runtime:
    """The production loop: one camera, triggers from the GPIO input (or a timer), until `stop`.

    The trigger callback only timestamps and submits: capture, inference and actuation
    run on the runtime's own threads.
    """
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
        with line_runtime(cfg, pin_factory) as rt:

            def trigger() -> None:
                t = time.monotonic()  # first thing: the edge's time, before any other work
                n = next(counter)
                if max_containers and n > max_containers:
                    return
                rt.submit(Job(f"n{n:09d}", t, camera.read))
                if submitted is not None and max_containers is not None and n >= max_containers:
                    submitted.set()

            if cfg.gpio.trigger_pin is not None and rt.io.trigger is not None:
                rt.io.trigger.when_activated = trigger
            period = 60.0 / rate_per_min if rate_per_min else None
            nxt = time.monotonic()
            while not stop.is_set() and not (submitted is not None and submitted.is_set()):
                if period is None:
                    stop.wait(0.5)
                    continue
                nxt += period
                trigger()
                stop.wait(max(0.0, nxt - time.monotonic()))
            rt.drain(timeout=30)
            rt.io.pulses.wait_idle(timeout=cfg.gpio.delay_ms / 1000 + 1)
            return rt
    finally:
        camera.close()
