"""The runtime's books: containers between their trigger and their audit row.

What is pending (in flight or waiting for the audit stage), what was decided (counters and
a rolling window, never a per-container history: memory stays bounded), the reject pulses
armed at the trigger, and the fault counts that feed the alarm. One lock for all of it;
the runtime holds the same lock for its own table of undecided containers.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, Dict, Optional

from .alarm import Alarm
from .jobs import Outcome
from .metrics import RuntimeMetrics
from .pulse_queue import Pulse


class Ledger:
    def __init__(
        self,
        metrics: RuntimeMetrics,
        alarm: Alarm,
        clock: Callable[[], float],
        on_outcome: Optional[Callable[[Outcome], None]] = None,
    ) -> None:
        self.metrics, self.alarm, self.clock, self.on_outcome = metrics, alarm, clock, on_outcome
        self.lock = threading.Lock()
        self._idle = threading.Condition(self.lock)
        self.pending = 0  # containers and amending rows not yet through the audit stage
        self.counts: Dict[str, int] = collections.Counter()
        self.recent: Deque[Outcome] = collections.deque(maxlen=256)  # a rolling window
        self.armed: Dict[str, Pulse] = {}  # reject wiring: container -> its armed pulse

    def open(self, container_id: Optional[str] = None, armed: Optional[Pulse] = None) -> None:
        """One more row to come (a container at its trigger, or an amending row). Call with
        the lock held."""
        self.pending += 1
        if container_id is not None and armed is not None:
            self.armed[container_id] = armed

    def take_armed(self, container_id: str) -> Optional[Pulse]:
        with self.lock:
            return self.armed.pop(container_id, None)

    def done(self, out: Outcome) -> None:
        """The audit stage is through with `out` (recorded, or given up on)."""
        if not out.amends:
            with self.lock:
                self.armed.pop(out.container_id, None)  # a reject keeps its pulse armed
                self.counts["reject" if out.reject else "accept"] += 1
            self.metrics.containers.labels("reject" if out.reject else "accept").inc()
            self.metrics.latency.labels("total").observe(self.clock() - out.trigger_t)
        else:  # an amend: the books follow what the gate did
            # A rejecting amend is an accept the gate did not pass; a passing one is a reject
            # whose pulse did not happen (reject wiring): it went through the good path.
            moved = ("accept", "reject") if out.reject else ("reject", "passed_unaccepted")
            with self.lock:
                self.counts[moved[0]] -= 1
                self.counts[moved[1]] += 1
            self.metrics.containers.labels(
                "amended_to_reject" if out.reject else "amended_to_pass"
            ).inc()
        if out.fault is not None:
            self.count_fault(out.fault)
        out.image = None  # recorded: the frame need not outlive the audit row
        self.recent.append(out)
        try:
            if self.on_outcome is not None:
                self.on_outcome(out)
        finally:  # a failing hook is a crash of its stage, never a container left pending
            with self._idle:
                self.pending -= 1
                self._idle.notify_all()

    def drain(self, timeout: float, tick: float) -> bool:
        """Wait until nothing is pending; False after `timeout` seconds."""
        end = self.clock() + timeout
        with self._idle:
            while self.pending:
                left = end - self.clock()
                if left <= 0:
                    return False
                self._idle.wait(min(left, tick))
        return True

    def inc(self, key: str, n: int = 1) -> None:
        with self.lock:  # several stages count: no lost increments
            self.counts[key] += n

    def count_fault(self, fault: str) -> None:
        self.inc(f"fault:{fault}")
        self.alarm.count(fault)
