"""One way to time things, for every timer in the project (`fod bench`, calibration's
latency report, benchmarks/): the monotonic high-resolution clock, warm-up runs that
are not counted, a minimum number of runs and a minimum run time, and one summary
(min, median, mean, p90, p95, p99, max, throughput; trtexec reports the same).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

clock = time.perf_counter  # monotonic, highest resolution; seconds


@dataclass(frozen=True)
class Stats:
    """Summary of one stage's times, in milliseconds."""

    runs: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    throughput_per_s: float  # items per second at the mean: 1000 * items / mean_ms
    outliers: int  # runs beyond 1.5 IQR of the quartiles (other processes, page faults)

    def to_dict(self) -> Dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(times_ms: Sequence[float], items_per_run: int = 1) -> Stats:
    """Stats of `times_ms` (at least one run); `items_per_run` (e.g. the batch) sets throughput."""
    a = np.asarray(times_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no times to summarize")
    if not np.isfinite(a).all() or (a < 0).any():
        raise ValueError("times must be finite and non-negative")
    q1, q3 = np.percentile(a, [25, 75])
    fence = 1.5 * (q3 - q1)
    mean = float(a.mean())
    return Stats(
        runs=int(a.size),
        min_ms=float(a.min()),
        median_ms=float(np.median(a)),
        mean_ms=mean,
        p90_ms=float(np.percentile(a, 90)),
        p95_ms=float(np.percentile(a, 95)),
        p99_ms=float(np.percentile(a, 99)),
        max_ms=float(a.max()),
        throughput_per_s=1000.0 * items_per_run / mean if mean > 0 else float("inf"),
        outliers=int(((a < q1 - fence) | (a > q3 + fence)).sum()),
    )


class StageTimer:
    """Accumulates named stage times: `with timer("preprocess"): ...` or `timer.add(name, ms)`."""

    def __init__(self) -> None:
        self.times: Dict[str, List[float]] = {}

    def add(self, stage: str, ms: float) -> None:
        self.times.setdefault(stage, []).append(ms)

    def __call__(self, stage: str) -> _Span:
        return _Span(self, stage)

    def summary(self, items_per_run: Optional[Dict[str, int]] = None) -> Dict[str, Stats]:
        items = items_per_run or {}
        return {k: summarize(v, items.get(k, 1)) for k, v in self.times.items() if v}


class _Span:
    def __init__(self, timer: StageTimer, stage: str) -> None:
        self.timer, self.stage = timer, stage

    def __enter__(self) -> _Span:
        self.t0 = clock()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:  # a failed run is not a time
            self.timer.add(self.stage, (clock() - self.t0) * 1e3)


def repeat(
    fn: Callable[[], object],
    warmup: int = 3,
    min_runs: int = 10,
    min_seconds: float = 0.0,
    max_runs: Optional[int] = None,
) -> List[float]:
    """Times of `fn()` in ms: `warmup` uncounted calls, then at least `min_runs` calls and
    at least `min_seconds` of them (whichever is longer), at most `max_runs`."""
    for _ in range(warmup):
        fn()
    times: List[float] = []
    start = clock()
    while len(times) < min_runs or clock() - start < min_seconds:
        if max_runs is not None and len(times) >= max_runs:
            break
        t = clock()
        fn()
        times.append((clock() - t) * 1e3)
    return times
