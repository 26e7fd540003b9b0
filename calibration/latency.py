"""ONNX Runtime latency of a model on this machine, timed the project's one way (edge.timing)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.timing import Stats, repeat, summarize


def ort_latency(
    path: Path,
    image: np.ndarray,
    threads: Optional[int] = None,
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 3.0,
    int8_kernels: str = "integer",
) -> Stats:
    """Time the model alone (ONNX Runtime's run on the model's own input, built once from
    `image`, uint8 [H, W, 3] or [H, W] at the model size), batch 1. `int8_kernels` as the
    backend's; "integer" by default: ORT's fastest path, what the speed-up compares."""
    with OnnxRuntimeBackend(path, threads=threads, int8_kernels=int8_kernels) as backend:
        x = backend.prepare(image[None])
        return summarize(repeat(lambda: backend.run(x), warmup, min_runs, min_seconds))
