"""The simulated line: containers with known truth through the real runtime, in real time.

Sequences come from a folder in `fod synth`'s layout (`sequences.json` + videos);
triggers from a timer at the line rate; GPIO is gpiozero's MockFactory; the model
is a verified bundle on ONNX Runtime. Faults can be injected per frame or per call
to measure that every one of them ends in a reject.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from .errors import FodError
from .runtime import Job, Outcome, Runtime

FAULT_KINDS = ("camera_drop", "corrupt", "backend_error", "slow")


def parse_faults(spec: Optional[str]) -> Dict[str, float]:
    """'camera_drop=0.02,corrupt=0.02,backend_error=0.02,slow=0.02' -> probabilities."""
    out: Dict[str, float] = {}
    for part in filter(None, (spec or "").split(",")):
        name, _, value = part.partition("=")
        if name not in FAULT_KINDS:
            raise FodError(
                f"--faults: unknown fault {name!r}; choose from {', '.join(FAULT_KINDS)}"
            )
        try:
            p = float(value)
        except ValueError:
            raise FodError(f"--faults: {name} needs a probability, got {value!r}") from None
        if not 0 <= p <= 1:
            raise FodError(f"--faults: {name}={p} is not a probability")
        out[name] = p
    return out


class FaultyBackend:
    """Wraps a backend: raises or stalls with the given probabilities (seeded)."""

    def __init__(
        self, inner: Any, faults: Dict[str, float], stall_s: float, rng: random.Random
    ) -> None:
        self.inner, self.faults, self.stall_s, self.rng = inner, faults, stall_s, rng

    def infer(self, images: np.ndarray):
        if self.rng.random() < self.faults.get("backend_error", 0.0):
            raise RuntimeError("injected backend error")
        if self.rng.random() < self.faults.get("slow", 0.0):
            time.sleep(self.stall_s)
        return self.inner.infer(images)

    def close(self) -> None:
        self.inner.close()


def faulty_reader(
    read: Callable[[], Optional[np.ndarray]], faults: Dict[str, float], rng: random.Random
) -> Callable[[], Optional[np.ndarray]]:
    def wrapped() -> Optional[np.ndarray]:
        frame = read()
        if rng.random() < faults.get("camera_drop", 0.0):
            return None
        if frame is not None and rng.random() < faults.get("corrupt", 0.0):
            return frame[: frame.shape[0] // 2]  # a truncated frame
        return frame

    return wrapped


@dataclass(frozen=True)
class Container:
    id: str
    video: Path
    label: str  # accept | reject


def load_sequences(folder: Path) -> List[Container]:
    path = folder / "sequences.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        out = [
            Container(f"c{c['id']:06d}", folder / c["path"], c["label"]) for c in data["containers"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FodError(f"{path}: not a sequences file from `fod synth`: {e}") from None
    if not out:
        raise FodError(f"{path}: no containers")
    return out


def percentile_ms(values: Sequence[float], q: float) -> Optional[float]:
    return float(np.percentile(np.asarray(values) * 1000, q)) if len(values) else None


def summarize(outcomes: List[Outcome], pulses_late_ms: List[float]) -> Dict[str, Any]:
    n = len(outcomes)
    rej = [o for o in outcomes if o.reject]
    truth_rej = [o for o in outcomes if o.truth == "reject"]
    truth_ok = [o for o in outcomes if o.truth == "accept"]
    faults: Dict[str, int] = {}
    for o in outcomes:
        if o.fault:
            faults[o.fault] = faults.get(o.fault, 0) + 1
    capture = [o.captured_t - o.trigger_t for o in outcomes if o.captured_t]
    decide = [o.decided_t - o.trigger_t for o in outcomes if o.decided_t]
    return {
        "containers": n,
        "accepted": n - len(rej),
        "rejected": len(rej),
        "faults": faults,
        "detection_rate": sum(o.reject for o in truth_rej) / len(truth_rej) if truth_rej else None,
        "false_reject_rate": sum(o.reject for o in truth_ok) / len(truth_ok) if truth_ok else None,
        "latency_ms": {
            "capture_p50": percentile_ms(capture, 50),
            "capture_p99": percentile_ms(capture, 99),
            "decision_p50": percentile_ms(decide, 50),
            "decision_p99": percentile_ms(decide, 99),
        },
        "deadline_misses": faults.get("late", 0),
        "pulse_lateness_ms_max": max(pulses_late_ms) if pulses_late_ms else None,
    }


def noisy_reader(
    read: Callable[[], Optional[np.ndarray]], sigma: float, rng: np.random.Generator
) -> Callable[[], Optional[np.ndarray]]:
    """Fresh sensor noise on every frame: a re-inspection never sees identical pixels."""

    def wrapped() -> Optional[np.ndarray]:
        f = read()
        if f is None or sigma <= 0:
            return f
        return np.clip(f + rng.normal(0, sigma, f.shape), 0, 255).astype(np.uint8)

    return wrapped


def run_line(
    runtime: Runtime,
    containers: List[Container],
    count: int,
    rate_per_min: float,
    open_reader: Callable[[str], Any],
    faults: Dict[str, float],
    seed: int = 0,
    noise_sigma: float = 0.0,
) -> None:
    """Trigger `count` containers at the line rate and wait until each is finished.

    Container i is containers[i % len(containers)]: a count above the number of
    containers re-inspects each of them (with fresh sensor noise if `noise_sigma`)."""
    rng = random.Random(seed)
    period = 60.0 / rate_per_min
    start = time.monotonic() + 0.05
    sources = []
    for i in range(count):
        c = containers[i % len(containers)]
        t = start + i * period
        now = time.monotonic()
        if t > now:
            time.sleep(t - now)
        src = open_reader(f"file:{c.video}")
        sources.append(src)
        read = noisy_reader(src.read, noise_sigma, np.random.default_rng([seed, i]))
        runtime.submit(
            Job(f"{c.id}-{i}", time.monotonic(), faulty_reader(read, faults, rng), c.label)
        )
    runtime.drain(timeout=120 + count * 10)
    for s in sources:
        s.close()
