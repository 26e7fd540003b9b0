"""ONNX Runtime latency of a model on this machine: warm-up, a minimum run time, robust stats."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from edge.preprocess import nchw_float


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p90_ms: float
    mean_ms: float  # of the runs inside 1.5 IQR (outliers: other processes, page faults)
    runs: int

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def ort_latency(
    path: Path,
    image: np.ndarray,
    threads: Optional[int] = None,
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 3.0,
) -> Latency:
    """Time `session.run` on one input (image [H, W, 3] uint8 at the model size), batch 1."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = nchw_float(image[None])  # the ONNX Runtime backend's own input
    for _ in range(warmup):
        sess.run(None, {"images": x})
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        sess.run(None, {"images": x})
        times.append((time.perf_counter() - t) * 1e3)
    a = np.array(times)
    q1, q3 = np.percentile(a, [25, 75])
    inliers = a[(a >= q1 - 1.5 * (q3 - q1)) & (a <= q3 + 1.5 * (q3 - q1))]
    return Latency(float(np.median(a)), float(np.percentile(a, 90)), float(inliers.mean()), len(a))
