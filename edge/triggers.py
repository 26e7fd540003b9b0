"""The recent triggers, by time and container: which containers are too close for the gate
to tell apart, the next trigger after one (where its frames end), and whose gate windows a
span of the gate output covered."""

from __future__ import annotations

import collections
import threading
from typing import Deque, List, Optional, Tuple

from .gpio import GATE_LEAD_S, GpioConfig


class Triggers:
    def __init__(self, gpio: GpioConfig, keep: int = 64) -> None:
        self.delay_s, self.pulse_s = gpio.delay_ms / 1000, gpio.pulse_ms / 1000
        # Two triggers closer than this (s): the gate cannot tell the containers apart.
        self.clash_s = (gpio.pulse_ms + gpio.trigger_bounce_ms) / 1000
        self._recent: Deque[Tuple[float, str]] = collections.deque(maxlen=keep)
        self._lock = threading.Lock()  # a leaf: nothing else is taken while it is held

    def add(self, trigger_t: float, container_id: str) -> None:
        with self._lock:
            self._recent.append((trigger_t, container_id))

    def next_after(self, trigger_t: float) -> float:
        """The next trigger's time after `trigger_t` (inf: none yet)."""
        with self._lock:
            return min((t for t, _ in self._recent if t > trigger_t), default=float("inf"))

    def clash(self, trigger_t: float) -> Optional[str]:
        """Why a container triggered at `trigger_t` must not be released: another trigger
        within one gate pulse plus the debounce time. The gate cannot tell two containers
        that close apart, so an accept pulse for one (a ghost trigger: a bounce the
        debounce let through, a glitch) would pass the other whatever its own decision."""
        with self._lock:
            near = [t - trigger_t for t, _ in self._recent if abs(t - trigger_t) < self.clash_s]
        if len(near) < 2:  # its own trigger only
            return None
        gap = min((abs(d) for d in near if d != 0), default=0.0)
        return f"another trigger {gap * 1000:.1f} ms from its own (the gate cannot tell them apart)"

    def gated_in(self, t0: float, t1: float) -> List[Tuple[str, float]]:
        """(container, trigger time) of the recent containers whose gate window (from
        GATE_LEAD_S before the gate time to a pulse length after it) overlaps [t0, t1]."""
        g0, g1 = self.delay_s - GATE_LEAD_S, self.delay_s + self.pulse_s
        with self._lock:
            return [(cid, t) for t, cid in self._recent if t + g0 < t1 and t + g1 > t0]
