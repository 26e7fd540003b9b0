"""Resident memory of the runtime over many containers: no per-container history may grow.

Fast mode without inference: the real Runtime, LineIO (MockFactory), AuditLog (SQLite,
WAL, anchor) and decision, with a backend that returns "nothing found" at once, one
small frame per container, and a gate delay long enough that no decision is late. Prints
RSS after each checkpoint; a flat line is the pass. At ~300 containers/s (30x a fast line)
with 1 ms pulses the pulse thread wakes later than a pulse length for most of them: those
accepts are amended as `late` (rejected at the gate), which exercises that path too.

    python benchmarks/bench_rss.py --containers 100000 --every 10000 [--audit DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from gpiozero.pins.mock import MockFactory

from edge.audit import AuditLog
from edge.config import LineConfig
from edge.detector import EdgeDetector
from edge.gpio import LineIO
from edge.metrics import RuntimeMetrics
from edge.model_info import ModelInfo
from edge.runtime import Job, Runtime
from edge.sources import Frame

W, H, COUNTS = 80, 64, [80, 20, 5]


class NothingFound:
    """A backend that answers at once with a quiet frame, as a healthy model's outputs look
    to the runtime's checks: 1-px boxes [N, A, 4] inside the input, scores [N, A, 3] under
    0.01 that differ per anchor and follow the image (all zeros is a dead output, the same
    outputs for another image a stale one: both rejected)."""

    def infer(self, images):
        n, a = len(images), sum(COUNTS)
        k = np.arange(a, dtype=np.float32)
        x, y = k % (W - 1), k // (W - 1)
        boxes = np.stack([x, y, x + 1, y + 1], axis=1)  # [A, 4]
        ramp = np.arange(1, a * 3 + 1, dtype=np.float32).reshape(a, 3) / (a * 3)  # [A, 3]
        level = images.reshape(n, -1).mean(axis=1, dtype=np.float32) / 255  # [N]
        scores = 0.005 * ramp[None] * (1 + level[:, None, None])  # [N, A, 3]
        return np.repeat(boxes[None], n, axis=0), scores.astype(np.float32)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def fast_runtime(folder: Path, rotate_bytes: int = 256 * 2**20, on_outcome=None):
    """The real runtime with a backend that finds nothing at once, one small grey frame."""
    base = LineConfig()
    cfg = dataclasses.replace(
        base,
        camera=dataclasses.replace(base.camera, frames=1, width=W, height=H, mono=True),
        # Triggers microseconds apart, in bursts of 32: a 1 us pulse and no debounce keep
        # them apart (trigger_conflict rejects triggers closer than pulse + debounce).
        gpio=dataclasses.replace(
            base.gpio, pin_factory="mock", delay_ms=5000.0, pulse_ms=0.001, trigger_bounce_ms=0.0
        ),
        timing=dataclasses.replace(base.timing, queue_depth=64),
        audit=dataclasses.replace(
            base.audit, folder=folder, min_free_bytes=0, rotate_bytes=rotate_bytes
        ),
    )
    info = ModelInfo(["fiber", "particle", "glass_flake"], (W, H), COUNTS, "-", "none")
    with LineIO(cfg.gpio, MockFactory()) as io, AuditLog(cfg.audit) as audit:
        det = EdgeDetector(NothingFound(), info)
        rt = Runtime(cfg, det, io, audit, RuntimeMetrics(), "m" * 64, (H, W), on_outcome=on_outcome)
        try:
            yield rt
        finally:
            rt.close()


def submit(rt: Runtime, i: int, frames) -> None:
    img = frames[i % 2]  # alternate: two identical frames in a row are "frozen"
    t = time.monotonic()  # a hardware-triggered camera: its frame is stamped at the edge
    rt.submit(Job(f"c{i}", t, lambda img=img, t=t: Frame(img, t + 1e-6)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=2_000)
    ap.add_argument("--audit", type=Path, help="audit folder (default: a temp folder)")
    args = ap.parse_args()
    folder = args.audit or Path(tempfile.mkdtemp(prefix="fod-rss-"))
    rng = np.random.default_rng(0)
    frames = [rng.integers(20, 230, (H, W), dtype=np.uint8) for _ in range(2)]
    with fast_runtime(folder) as rt:
        t0 = time.monotonic()
        print(f"{'containers':>10} {'RSS MB':>8} {'containers/s':>12}")
        for i in range(1, args.containers + 1):
            submit(rt, i, frames)
            if i % 32 == 0:
                rt.drain(60)
            if i % args.every == 0:
                rt.drain(60)
                print(f"{i:>10} {rss_mb():>8.1f} {i / (time.monotonic() - t0):>12.0f}", flush=True)
        rt.drain(60)
    faults = {k[6:]: v for k, v in rt.counts.items() if k.startswith("fault:")}
    print(f"accepted {rt.counts['accept']}, rejected {rt.counts['reject']}, faults {faults}")


if __name__ == "__main__":
    main()
