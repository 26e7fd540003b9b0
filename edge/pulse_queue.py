"""The gate pulses still to fire, ordered by gate time: scheduled and cancelled by the
runtime, taken by the pulse thread (`edge.pulses`) when due, and by the supervisor
(`PulseScheduler.reap`) when a hung gate write lets them pass unfired. One lock."""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from dataclasses import dataclass, field
from typing import List, Optional, Set, Tuple


@dataclass(eq=False)
class Pulse:
    at: float  # scheduled monotonic time (the container's gate time)
    tag: str  # the container it is for
    state: str = "pending"  # pending | on | fired | missed | error | cancelled
    fired_t: Optional[float] = None  # when the gate went on for it; None: it never did
    error: Optional[str] = None
    seq: int = field(default=0, repr=False)


class PulseQueue:
    """Pending pulses in a heap by time; a taken pulse leaves it in state "on", to be
    finished by whoever took it. Cancelled pulses stay in the heap until they reach its
    head (cancelling is O(1) at the trigger)."""

    def __init__(self) -> None:
        self._heap: List[Tuple[float, int, Pulse]] = []
        self._count = itertools.count()
        self._lock = threading.Lock()

    def push(self, at: float, tag: str) -> Pulse:
        if not math.isfinite(at):  # NaN would poison the heap: no later pulse would fire
            raise ValueError(f"pulse {tag!r}: time {at!r} is not finite")
        p = Pulse(at, tag, seq=next(self._count))
        with self._lock:
            heapq.heappush(self._heap, (at, p.seq, p))
        return p

    def cancel(self, pulse: Pulse) -> bool:
        """Cancel a pending pulse; False if it is already taken or cancelled."""
        with self._lock:
            if pulse.state != "pending":
                return False
            pulse.state = "cancelled"
        return True

    def cancel_near(self, at: float, window_s: float, tag: Optional[str] = None) -> List[Pulse]:
        """Cancel every pending pulse within `window_s` of `at` (for `tag` only, if given)
        -> those cancelled."""
        out = []
        with self._lock:
            for _, _, p in self._heap:
                if p.state != "pending" or (tag is not None and p.tag != tag):
                    continue
                if abs(p.at - at) < window_s:
                    p.state = "cancelled"
                    out.append(p)
        return out

    def next_at(self) -> Optional[float]:
        """The time of the earliest pending pulse (cancelled ones at the head dropped)."""
        with self._lock:
            while self._heap and self._heap[0][2].state == "cancelled":
                heapq.heappop(self._heap)
            return self._heap[0][0] if self._heap else None

    def take_next(self) -> Optional[Pulse]:
        """Take the earliest pulse, now "on"; None if it was cancelled or taken meanwhile
        (`take_due` from the supervisor)."""
        with self._lock:
            if not self._heap:
                return None
            _, _, p = heapq.heappop(self._heap)
            if p.state != "pending":
                return None
            p.state = "on"
            return p

    def take_due(self, until: float) -> List[Pulse]:
        """Take the pending pulses due by `until`, each now "on" (cancelled ones dropped)."""
        out = []
        with self._lock:
            while self._heap and self._heap[0][0] <= until:
                _, _, q = heapq.heappop(self._heap)
                if q.state == "pending":
                    q.state = "on"
                    out.append(q)
        return out

    def pending(self) -> int:
        with self._lock:
            return sum(p.state == "pending" for _, _, p in self._heap)

    def pending_tags(self) -> Set[str]:
        with self._lock:
            return {p.tag for _, _, p in self._heap if p.state == "pending"}

    def cancel_all(self) -> None:
        """At close: every pending pulse cancelled, the heap emptied."""
        with self._lock:
            for _, _, p in self._heap:
                if p.state == "pending":
                    p.state = "cancelled"
            self._heap.clear()
