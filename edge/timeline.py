"""Timeline picture of a simulated run: per container, trigger, capture, decision and pulse."""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from .fsutil import write_png
from .runtime import Outcome

_W, _ROW, _LEFT, _TOP = 1200, 16, 140, 40
_STEPS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


def tick_step(px_per_s: float, min_px: float = 40.0) -> int:
    """The smallest time step (s) whose ticks stand at least `min_px` apart: a long run's
    labels must not overprint each other."""
    return next((s for s in _STEPS_S if s * px_per_s >= min_px), _STEPS_S[-1])


def draw_timeline(
    outcomes: Sequence[Outcome],
    gate_on: Sequence[Tuple[float, float]],
    delay_s: float,
    out: Path,
    limit: int = 60,
    alarm_on: Sequence[Tuple[float, float]] = (),
) -> None:
    """Rows in trigger order: capture bar (grey), decision dot (green accept, red reject,
    ringed when a fault decided it), gate time (thin line), and the gate output's pulses
    (orange) from the pin history, drawn on the row whose gate they fall on; a red band
    over the rows where the alarm output showed the alarm (`alarm_on`)."""
    containers = [o for o in outcomes if not o.amends]  # an amending row is not a container
    rows: List[Outcome] = sorted(containers, key=lambda o: o.trigger_t)[:limit]
    if not rows:
        return
    t0 = rows[0].trigger_t
    t1 = max(max(o.decided_t for o in rows), rows[-1].trigger_t + delay_s) + 0.1
    sx = (_W - _LEFT - 20) / (t1 - t0)
    h = _TOP + _ROW * len(rows) + 30
    img = np.full((h, _W, 3), 255, np.uint8)

    def x(t: float) -> int:
        return int(_LEFT + (t - t0) * sx)

    for a, b in alarm_on:  # under everything else; an alarm to the end runs off the right
        if b > t0 and a < t1:
            cv2.rectangle(
                img, (x(max(a, t0)), _TOP - 8), (x(min(b, t1)), _TOP - 3), (0, 0, 220), -1
            )

    for s in range(0, int(t1 - t0) + 1, tick_step(sx)):
        cv2.line(img, (x(t0 + s), _TOP - 5), (x(t0 + s), h - 25), (230, 230, 230), 1)
        cv2.putText(
            img, f"{s}s", (x(t0 + s) - 8, h - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (90, 90, 90), 1
        )
    for i, o in enumerate(rows):
        y = _TOP + i * _ROW + _ROW // 2
        cv2.putText(
            img, o.container_id[-14:], (4, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1
        )
        cv2.line(img, (x(o.trigger_t), y - 6), (x(o.trigger_t), y + 6), (200, 80, 0), 2)  # trigger
        if o.captured_t:
            cv2.line(img, (x(o.trigger_t), y), (x(o.captured_t), y), (160, 160, 160), 3)  # capture
        gate = o.trigger_t + delay_s
        cv2.line(img, (x(gate), y - 6), (x(gate), y + 6), (0, 0, 0), 1)
        colour = (0, 0, 220) if o.reject else (0, 170, 0)
        cv2.circle(img, (x(o.decided_t), y), 4, colour, -1)
        if o.fault:
            cv2.circle(img, (x(o.decided_t), y), 7, (0, 0, 220), 1)
        for a, b in gate_on:
            if gate - 0.005 <= a <= gate + 0.05:
                cv2.rectangle(img, (x(a), y - 5), (x(min(b, t1)) + 2, y + 5), (0, 140, 255), -1)
    cv2.putText(
        img,
        "blue: trigger  grey: capture  dot: decision (green accept, red reject, ring: fault)"
        "  black: gate  orange: gate output pulse  red band: alarm"
        + (f"  (first {limit} of {len(containers)} containers)" if len(containers) > limit else ""),
        (4, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.4,
        (0, 0, 0),
        1,
    )
    write_png(out, img)
