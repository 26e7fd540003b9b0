"""The alarm output: latched on the first serious fault, or on `faults` faults within
`window_s` seconds. Latched until the process restarts: an operator looks at the line
before it runs unattended again."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Optional

log = logging.getLogger(__name__)


class Alarm:
    def __init__(
        self,
        io: Any,  # LineIO: set_alarm(bool)
        metrics: Any,  # RuntimeMetrics: faults counter, alarm gauge
        faults: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.io, self.metrics, self.faults, self.window_s, self.clock = (
            io,
            metrics,
            faults,
            window_s,
            clock,
        )
        self.raised = False
        self.reasons: Deque[str] = collections.deque(maxlen=32)
        self._times: Deque[float] = collections.deque()
        self._lock = threading.Lock()
        # Each reason on record (the audit folder's events), raised already or not.
        self.on_event: Optional[Callable[[str], Any]] = None

    def raise_(self, reason: str) -> None:
        with self._lock:
            self.reasons.append(reason)
            first, self.raised = not self.raised, True
        if first:
            self.metrics.alarm.set(1)
            log.error("alarm raised: %s", reason)
            try:
                self.io.set_alarm(True)
            except Exception as e:  # the alarm output failed: the log and record are left
                log.critical("alarm output failed: %s", e)
        else:
            log.error("alarm (raised already): %s", reason)
        if self.on_event is not None:  # after the pin: a slow disk never delays it
            try:
                self.on_event(reason)
            except Exception:
                log.exception("alarm: recording %r failed", reason)

    def count(self, fault: str) -> None:
        """One fault of class `fault`; raises the alarm when the window holds `faults`."""
        now = self.clock()
        self.metrics.faults.labels(fault).inc()
        with self._lock:
            self._times.append(now)
            while self._times and now - self._times[0] > self.window_s:
                self._times.popleft()
            n = len(self._times)
        if n >= self.faults and not self.raised:
            self.raise_(f"{n} faults within {self.window_s:.0f} s")
