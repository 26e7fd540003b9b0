"""The alarm output: latched on the first serious fault, or on `faults` faults within
`window_s` seconds. Latched until the process restarts: an operator looks at the line
before it runs unattended again.

The output is written by a stage of its own (`step`, supervised like the others): raising
the alarm never waits on a GPIO driver, so a hung alarm write stalls no stage that decides
or releases containers (its own stage goes stale: the stuck-stage alarm, on record, and
systemd's watchdog). The alarm is what stops a line whose gate the unit no longer trusts,
so a write that fails (a busy chardev, a bus hiccup) is not the end of it: written again
every PIN_RETRY_S until one goes through, each failure streak on record (`on_event`).

Which way the output shows the alarm is `gpio.alarm_energise_to` (`output_level`): "alarm",
energised on the alarm; "ready", energised while the runtime runs with no alarm (the
stage's first step switches it on; a raised alarm, and any end of the process, off);
"heartbeat", toggled every HEARTBEAT_S while the runtime runs with no alarm and steady off
otherwise, so that a process hung as a whole (nothing can write any pin) shows the alarm
to a controller that times the toggles, where a "ready" output stays on."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Deque, Optional

log = logging.getLogger(__name__)

# How often a raised alarm whose output write failed is written again.
PIN_RETRY_S = 0.5
IDLE_S = 0.05  # the alarm stage's longest wait: it beats while idle (as the runtime's)
# The heartbeat output's half period: it toggles this often while all is well. A controller
# that sees no toggle for HEARTBEAT_TIMEOUT_S (what the simulator reads) stops the line.
HEARTBEAT_S = 0.1
HEARTBEAT_TIMEOUT_S = 0.5
# `gpio.alarm_energise_to`: each value, and what the output does (`fod check` says it).
ALARM_OUTPUTS = {
    "alarm": "energised on the alarm",
    "ready": "energised while running with no alarm",
    "heartbeat": f"toggled every {HEARTBEAT_S * 1000:.0f} ms while running with no alarm",
}


def output_level(mode: str, raised: bool, now: float) -> bool:
    """The alarm pin's level for `mode` (`gpio.alarm_energise_to`) at monotonic time `now`:
    "alarm" on when raised; "ready" on while not raised; "heartbeat" toggling every
    HEARTBEAT_S while not raised, steady off when raised."""
    if mode == "alarm":
        return raised
    if raised:
        return False
    return mode == "ready" or int(now / HEARTBEAT_S) % 2 == 0


class Alarm:
    def __init__(
        self,
        io: Any,  # LineIO: write_alarm(level)
        metrics: Any,  # RuntimeMetrics: faults counter, alarm gauge
        faults: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        mode: str = "alarm",  # gpio.alarm_energise_to
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
        self.mode = mode
        self.level = False  # the pin's level after the last write that went through (opened off)
        self._pin_failures = 0  # writes failed since the last that went through
        self._next_write = 0.0  # when `hold` writes a failed output again
        self._pin_lock = threading.Lock()  # one write at a time
        self._wake = threading.Event()  # raised: the alarm stage writes the output

    def raise_(self, reason: str) -> None:
        with self._lock:
            self.reasons.append(reason)
            first, self.raised = not self.raised, True
        if first:
            self.metrics.alarm.set(1)
            log.error("alarm raised: %s", reason)
            self._wake.set()
        else:
            log.error("alarm (raised already): %s", reason)
        self._record(reason)

    def step(self) -> None:
        """The alarm stage's step: the output written to the level it must have now
        (`hold`), then an idle beat; woken at once by `raise_`."""
        self._wake.clear()  # before the look: a raise after it wakes the wait below
        self.hold()
        now, wait = self.clock(), IDLE_S
        if self.mode == "heartbeat" and not self.raised:  # the next toggle, on time
            wait = min(wait, HEARTBEAT_S - now % HEARTBEAT_S)
        if output_level(self.mode, self.raised, now) != self.level:  # a failed write
            wait = min(wait, max(0.0, self._next_write - now))
        self._wake.wait(wait)

    def hold(self) -> None:
        """An output whose level is not the one it must have now (the alarm raised; the
        ready or heartbeat output while running) is written, or, after a failed write,
        again every PIN_RETRY_S until one goes through. The alarm stage, and the runtime's
        close (a raise its stage had no step left for)."""
        now = self.clock()
        if output_level(self.mode, self.raised, now) != self.level and now >= self._next_write:
            self._write_pin()

    def _write_pin(self) -> None:
        """The alarm output written to its level; a failure is logged and recorded once per
        streak and left to `hold`. A write already in progress on another thread is left
        to finish."""
        if not self._pin_lock.acquire(blocking=False):
            return
        raised = self.raised  # latched: once True it stays so
        want = output_level(self.mode, raised, self.clock())
        try:
            self.io.write_alarm(want)
        except Exception as e:
            self._pin_failures += 1
            self._next_write = self.clock() + PIN_RETRY_S
            if self._pin_failures == 1:
                log.critical("alarm output failed: %s; writing it again", e)
                self._record(f"alarm output failed ({type(e).__name__}: {e}); writing it again")
        else:
            self.level = want
            if self._pin_failures:
                what = "the alarm" if raised else "ready" if self.mode == "ready" else "its beat"
                msg = f"alarm output shows {what} after {self._pin_failures} failed writes"
                log.warning(msg)
                self._record(msg)
            self._pin_failures = 0
        finally:
            self._pin_lock.release()

    def _record(self, reason: str) -> None:
        if self.on_event is not None:
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
