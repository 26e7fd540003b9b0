"""Latency histogram as a PNG, drawn with OpenCV: the unit has no matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import numpy as np

from .fsutil import write_png

W, H = 960, 540
LEFT, RIGHT, TOP, BOTTOM = 80, 30, 60, 70
COLOURS = [(200, 110, 30), (40, 120, 230), (60, 170, 60), (40, 40, 200)]  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _nice_step(span: float, target: int = 8) -> float:
    raw = span / target
    mag = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    return float(next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw))


def latency_histogram(
    series: Dict[str, Sequence[float]], path: Path, title: str, bins: int = 50
) -> None:
    """One histogram per series (ms) on shared axes, with each series' median (solid) and
    p99 (dashed) marked and listed in the legend."""
    data = {k: np.asarray(v, np.float64) for k, v in series.items() if len(v)}
    if not data:
        raise ValueError("no latencies to plot")
    lo = min(float(np.percentile(a, 0.5)) for a in data.values())
    hi = max(float(a.max()) for a in data.values())
    lo, hi = max(0.0, lo * 0.95), hi * 1.02 if hi > lo else lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    counts = {k: np.histogram(np.clip(a, lo, hi), edges)[0] / len(a) for k, a in data.items()}
    # Headroom above the tallest bar for the legend lines.
    ymax = max(float(c.max()) for c in counts.values()) * (1.15 + 0.08 * len(counts)) or 1.0
    img = np.full((H, W, 3), 255, np.uint8)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> int:
        return int(LEFT + (x - lo) / (hi - lo) * pw)

    def py(y: float) -> int:
        return int(TOP + ph - y / ymax * ph)

    step = _nice_step(hi - lo)
    for t in np.arange(np.ceil(lo / step) * step, hi + 1e-9, step):
        cv2.line(img, (px(t), TOP), (px(t), TOP + ph), (235, 235, 235), 1)
        cv2.putText(img, f"{t:g}", (px(t) - 15, TOP + ph + 20), FONT, 0.45, (60, 60, 60), 1)
    ystep = _nice_step(ymax, 5)
    for t in np.arange(0, ymax, ystep):
        cv2.line(img, (LEFT, py(t)), (LEFT + pw, py(t)), (235, 235, 235), 1)
        cv2.putText(img, f"{100 * t:g}%", (LEFT - 50, py(t) + 5), FONT, 0.45, (60, 60, 60), 1)
    legend: List[str] = []
    for i, (name, c) in enumerate(counts.items()):
        colour = COLOURS[i % len(COLOURS)]
        for j, v in enumerate(c):
            if v > 0:
                x0, x1 = px(edges[j]) + 1, max(px(edges[j + 1]) - 1, px(edges[j]) + 1)
                overlay = img.copy()
                cv2.rectangle(overlay, (x0, py(v)), (x1, py(0)), colour, -1)
                cv2.addWeighted(overlay, 0.55, img, 0.45, 0, dst=img)
        a = data[name]
        med, p99 = float(np.median(a)), float(np.percentile(a, 99))
        cv2.line(img, (px(med), TOP), (px(med), TOP + ph), colour, 2)
        for y in range(TOP, TOP + ph, 12):
            cv2.line(img, (px(p99), y), (px(p99), min(y + 6, TOP + ph)), colour, 2)
        legend.append(f"{name}: median {med:.2f} ms, p99 {p99:.2f} ms, n={len(a)}")
        cv2.rectangle(
            img, (LEFT + 10, TOP + 8 + 22 * i), (LEFT + 24, TOP + 22 + 22 * i), colour, -1
        )
        cv2.putText(
            img, legend[-1], (LEFT + 32, TOP + 20 + 22 * i), FONT, 0.5, (30, 30, 30), 1, cv2.LINE_AA
        )
    cv2.rectangle(img, (LEFT, TOP), (LEFT + pw, TOP + ph), (90, 90, 90), 1)
    cv2.putText(img, title, (LEFT, 35), FONT, 0.65, (20, 20, 20), 1, cv2.LINE_AA)
    cv2.putText(
        img, "latency (ms)", (LEFT + pw // 2 - 50, H - 25), FONT, 0.5, (40, 40, 40), 1, cv2.LINE_AA
    )
    write_png(path, img)
