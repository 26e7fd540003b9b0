"""Assemble the runtime from a line config: bundle -> backend -> detector, GPIO, audit, metrics.

One context manager owns every resource and releases them on any exit path.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional

from .audit import AuditLog
from .bundle import open_bundle
from .config import LineConfig
from .detector import EdgeDetector
from .errors import FodError
from .gpio import LineIO
from .metrics import RuntimeMetrics
from .runtime import Runtime


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
        roles = ("fp32",) if cfg.model.precision == "fp32" else ("int8_cpu", "int8")
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
