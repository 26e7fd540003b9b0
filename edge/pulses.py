"""The gate pulses: one supervised thread that fires `device.on()` at each scheduled
monotonic time for the pulse length.

The thread waits on an Event with a timeout against the monotonic clock, so a pulse lands
at trigger time + delay whatever the other threads do. Every pulse ends in a state
(fired, missed, error, cancelled) reported to `on_done`.

With a gate feedback input (`gpio.gate_feedback_pin`: the relay's auxiliary contact, or
the controller's "gate energised" signal), each pulse is checked against what the gate
did: feedback off at the end of the pulse makes the pulse an error (for an accept: the
container was not released), and feedback still on `gate_feedback_ms` after the output
went off, or on while no pulse is, is a stuck gate (a welded relay, a short): the runtime
raises the alarm, since with a level-reading controller every container would pass.

A gate write can also block (a hung driver call) and land late, at another container's
gate time. The pulse thread cannot take back a write the driver makes late; it switches
the gate off at once, reports its own pulse missed, and hands the span in which the
output may have been energised to `on_stray`, so the runtime can put on record (and
alarm for) the containers that may have passed through it.

The same for as long as the gate may stay energised between pulses: an off write that
failed every try, or the feedback on with the output off (a welded relay) (`GateWatch`).
The thread then writes the output off again and hands the span on every UNSURE_POLL_S,
so the containers it covers go on record while it lasts, until the gate is off again.

A write that never comes back leaves this thread unable to report anything: the
supervisor calls `reap` each tick, which, once a write has been in progress for longer
than a pulse, reports the pulses due meanwhile missed and the span since the write's call
unsure, from the supervisor's thread, while the write hangs. The same for a read of the
gate feedback that hangs: its pulses missed, and the span only where the output may have
been on meanwhile (read at the end of a pulse, or with the gate unsure).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Set

from .errors import GpioError
from .gate_watch import GateWatch
from .pin_calls import PinCalls
from .pulse_queue import Pulse, PulseQueue
from .supervise import Stage, StopStage

log = logging.getLogger(__name__)

# How much longer than planned the gate may stay on before the runtime is asked which
# containers' gate times it covered (a thread woken a few ms late is normal).
STRAY_S = 0.005
# While the gate may be energised between pulses, how often the thread writes it off again
# and reports the span since its last report (the containers in it go on record then).
UNSURE_POLL_S = 0.02
# The longest idle wait of the pulse thread: it beats its heartbeat (and reads the gate
# feedback) between waits, and a fast line's gate delay (the stall threshold) can be short.
IDLE_S = 0.05


class PulseScheduler:
    """Fires `device.on()` at each scheduled monotonic time for `pulse_s`, on one thread."""

    def __init__(
        self,
        device: Any,
        pulse_s: float,
        on_done: Optional[Callable[[Pulse], None]] = None,
        clock: Callable[[], float] = time.monotonic,
        history: int = 4096,
        feedback: Any = None,
        feedback_s: float = 0.01,
    ) -> None:
        self.device, self.pulse_s, self.clock = device, pulse_s, clock
        self.on_done = on_done
        self.on_crash: Optional[Callable[[BaseException], None]] = None  # the runtime alarms
        self.feedback, self.feedback_s = feedback, feedback_s  # an input following the gate
        self.on_stuck: Optional[Callable[[str], None]] = None  # the runtime alarms
        self.on_retry: Optional[Callable[[Pulse], None]] = None  # the runtime counts
        # (t0, t1, settled, cause): the output may have been energised anywhere in [t0, t1]
        # outside the pulses planned; `settled` names the containers whose own pulse
        # fired then or is still to come (their pulse says what happened). The runtime.
        self.on_stray: Optional[Callable[[float, float, Set[str], str], None]] = None
        read = None if feedback is None else self._read_feedback
        self.gate = GateWatch(read, self._report_stuck, clock)  # between the pulses
        self.pins = PinCalls(clock)  # the gate pin calls, each marked in progress (`reap`)
        self._reaped = 0.0  # a hung write's span is reported up to here (`reap`)
        self.queue = PulseQueue()
        self._lock = threading.Lock()  # the counts: this thread's and the supervisor's
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Bounded: a line runs for months; the simulator reads the recent ones.
        self.done: Deque[Pulse] = collections.deque(maxlen=history)
        self.counts = {"fired": 0, "missed": 0, "error": 0, "cancelled": 0, "stuck": 0}
        self.counts["retried"] = 0  # pulses whose gate write failed, then succeeded
        self._active = 0  # 1 while a pulse is on
        self._on: Optional[Pulse] = None  # the pulse now on (pulse thread only)
        self._riders: List[Pulse] = []  # pulses riding on the one now on (pulse thread only)
        self._late: List[Pulse] = []  # popped while one was on, due too long before (missed)
        self.stage = Stage("pulses", self._step, self._crashed, clock)
        self.stage.start()

    def schedule(self, at: float, tag: str = "") -> Pulse:
        p = self.queue.push(at, tag)
        self._wake.set()  # it may be due before the one the thread waits for
        return p

    def cancel(self, pulse: Pulse) -> bool:
        """Cancel a pending pulse; False if it is already on, fired or done otherwise."""
        if not self.queue.cancel(pulse):
            return False
        self._cancelled(1)
        return True

    def cancel_near(self, at: float, window_s: float, tag: Optional[str] = None) -> List[Pulse]:
        """Cancel every pending pulse within `window_s` of `at` (for `tag` only, if given);
        returns those cancelled."""
        out = self.queue.cancel_near(at, window_s, tag)
        self._cancelled(len(out))
        return out

    def _cancelled(self, n: int) -> None:
        with self._lock:
            self.counts["cancelled"] += n

    def pending(self) -> int:
        # The queue first: `_step` sets `_active` before it takes a pulse out of the queue,
        # so a pulse on its way out is counted by one read or the other.
        return self.queue.pending() + self._active

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every scheduled pulse has fired and ended."""
        end = self.clock() + timeout
        while self.pending() and self.clock() < end:
            self._stop.wait(0.005)
        return not self.pending()

    def _finish(self, p: Pulse, state: str) -> None:
        p.state = state
        with self._lock:  # this thread's, or the supervisor's (`reap`)
            self.counts[state] += 1
        self.done.append(p)
        if self.on_done is not None:
            self.on_done(p)

    def _step(self) -> None:
        if self._stop.is_set():
            raise StopStage
        nxt = self.queue.next_at()
        wait = IDLE_S if nxt is None else min(IDLE_S, nxt - self.clock())
        if wait > 0:  # short waits: the stage beats its heartbeat while idle
            self._watch_gate()
            if self.gate.unsure is not None:
                wait = min(wait, UNSURE_POLL_S)
            self._wake.wait(wait)  # a new, earlier deadline or close() wakes us
            self._wake.clear()
            return
        # Pending (for wait_idle) until finished and the gate seen to follow it off; a
        # missed pulse too is reported first.
        self._active = 1
        try:
            p = self.queue.take_next()
            if p is None:  # cancelled, or taken as missed by `reap`, meanwhile
                return
            if self.clock() - p.at > self.pulse_s:  # past the gate: a pulse now would hit
                self._finish(p, "missed")  # the next container
                return
            t_off = self._fire(p)
            if self.feedback is not None:
                self._stop.wait(self.feedback_s)
                self.gate.check_off(f"after the pulse for {p.tag}", t_off)
        finally:
            with self._lock:
                self._active = 0

    def _fire(self, p: Pulse) -> float:
        """Gate on for `p`, and for as long as pulses come due while it is on: each rides
        on this pulse and holds the gate on for its full length from its own time. Fired
        apart, the later of two pulses closer than one pulse length would wait for the
        first to end and, with a thread woken a few ms late, be missed although the gate
        was on at its time (its container reported passed that was rejected).

        A write that comes back after the pulse's window (it blocked in the driver) has
        energised the gate at another container's time: the gate goes off at once, the
        pulse is missed, and the span the output may have been on is reported (`_stray`).
        -> when the output went off (or its off write failed)."""
        t_call = self.clock()
        energised = False  # the energising write went through (else the output stayed off)
        try:
            self._on = p
            self._energise(p)
            energised = True
            p.fired_t = self.clock()
            late = p.fired_t - p.at
            if late > self.pulse_s:  # past its container: off now, not for a pulse length
                p.fired_t, state = None, "missed"
                p.error = f"the gate write came back {late * 1000:.0f} ms after its time"
                log.error("pulse for %s: %s", p.tag, p.error)
            else:
                end = p.fired_t + self.pulse_s
                while True:
                    self._stop.wait(max(0.0, end - self.clock()))
                    more = self._due_while_on(p.fired_t)
                    if not more:
                        break
                    self._riders += more
                    end = max(end, max(q.at for q in more) + self.pulse_s)
                if self.feedback is not None and not self._read_feedback():
                    p.fired_t = None  # the gate never went on: no edge for the controller
                    raise GpioError("the gate feedback stayed off: the gate did not energise")
                state = "fired"
        except Exception as e:  # a GPIO fault: reported per pulse, the runtime alarms
            p.error, state = f"{type(e).__name__}: {e}", "error"
        # The pulse ran its length (or never began): what it did stands whether or not the
        # gate then goes off. A gate left on is reported stuck.
        self._switch_off(p, energised)
        t_off = self.clock()
        self._on = None
        # Anything else (SystemExit from a driver) skips this: _crashed reports p and its
        # riders.
        ended, self._riders = [p, *self._riders], []
        late_ones, self._late = self._late, []
        for q in ended:
            q.error = p.error
            if p.fired_t is None:  # the gate did not go on for any of them
                q.fired_t = None
            self._finish(q, state)
        for q in [*late_ones, *self._pop_missed(t_off)]:
            self._finish(q, "missed")
        planned_end = max(q.at for q in ended) + self.pulse_s
        if state == "fired" and t_off > planned_end + self.pulse_s:
            log.error(
                "pulse for %s: the gate went off %.0f ms late", p.tag, (t_off - planned_end) * 1000
            )
        if t_off > planned_end + STRAY_S:  # after the missed ones: their rows come first
            fired = {q.tag for q in ended if q.state == "fired"}
            self._stray(t_call, t_off, fired, "a gate write blocked")
        return t_off

    def _pop_missed(self, now: float) -> List[Pulse]:
        """Pending pulses whose window ended by `now` (due while a write blocked), out of
        the heap: finished as missed by the caller."""
        return self.queue.take_due(now - self.pulse_s)

    def _stray(self, t0: float, t1: float, fired: Set[str], cause: str) -> None:
        """The output may have been on anywhere in [t0, t1] beyond the pulses planned."""
        pending = self.queue.pending_tags()
        if self.on_stray is not None:
            try:
                self.on_stray(t0, t1, fired | pending, cause)
            except Exception:
                log.exception("pulse thread: reporting the gate's stray span failed")

    def _read_feedback(self) -> bool:
        """The gate feedback's level; the output may be on while it is read during a pulse
        or with the gate unsure."""
        on = self._on is not None or self.gate.off_failed or self.gate.unsure is not None
        return bool(self.pins.call(lambda: self.feedback.is_active, on, "gate feedback read"))

    def reap(self) -> None:
        """From the supervisor, each tick: while one gate pin call has been in progress for
        longer than a pulse (hung in the driver; this thread fires nothing meanwhile), the
        pulses due more than a pulse length ago are missed, and, where the output may be on
        meanwhile (a write may switch it), the span since the call goes to the runtime as it
        grows. What the call itself does when it comes back, this thread reports then."""
        calling = self.pins.hung(self.pulse_s)
        if calling is None:
            return
        since, may_be_on, what = calling
        now = self.clock()
        for q in self._pop_missed(now):
            q.error = f"the {what} before it is stuck in the driver"
            self._finish(q, "missed")
        if may_be_on:
            t0, self._reaped = max(since, self._reaped), now
            self._stray(t0, now, self._recent_fired(), f"a {what} stuck in the driver")

    def _recent_fired(self) -> Set[str]:
        """The containers whose pulse fired lately: their own pulse says what happened."""
        return {q.tag for q in list(self.done)[-64:] if q.state == "fired"}

    def _energise(self, p: Pulse) -> None:
        """`device.on()` (`PinCalls.write`) while `p` is still no later than a pulse length past
        its time (where `_step` would still fire it); a pulse that took more than one
        write is counted."""
        if self.pins.write(self.device.on, p.tag, p.at + self.pulse_s) == 1:
            return
        self.counts["retried"] += 1
        if self.on_retry is not None:
            try:  # the gate is on: nothing here may turn it into a failed pulse
                self.on_retry(p)
            except Exception:
                log.exception("pulse thread: counting a retried write failed")

    def _switch_off(self, p: Pulse, energised: bool) -> None:
        """`device.off()` after `p` (`PinCalls.write`, whenever it is). Failing every write, the
        gate may stay energised (with a controller that reads the level, every container
        would pass): reported as a stuck gate, the alarm, and, where the pulse's energising
        write went through, the gate is unsure from here (`_watch_gate`) until an off write
        succeeds (the off is written again either way). Before, a failed off made the pulse
        itself a failure: an accept released in full was amended to a reject the gate never
        made."""
        t = self.clock()
        try:
            self.pins.write(self.device.off, p.tag, math.inf)
        except Exception as e:
            self.gate.off_written(t, False, energised)
            self._report_stuck(
                f"gate output not switched off after the pulse for {p.tag} "
                f"({type(e).__name__}: {e}): the gate may stay energised"
            )
        else:
            self.gate.off_written(t, True, energised)

    def _watch_gate(self) -> None:
        """Between pulses: an output whose off write failed is written off again and the
        feedback is read; while the gate may be energised, the span since the last report
        goes to the runtime (`_stray`), the last one ending when the gate is off again."""
        if self.gate.off_failed:
            try:
                self.pins.call(self.device.off)
            except Exception:  # still failing: the alarm is up since the first failure
                pass
            else:
                self.gate.off_failed = False
                log.warning("gate output switched off again")
        now = self.clock()
        self.gate.check_off("while no pulse was on")
        piece = self.gate.piece(now)
        if piece is not None:
            self._stray(piece[0], now, self._recent_fired(), piece[1])

    def _due_while_on(self, on_since: float) -> List[Pulse]:
        """Pop the pending pulses due by now: one due at most a pulse length before the gate
        went on at `on_since` rides (no later than `_step` would fire it); one due longer
        before is missed, as `_step` would report it, and reported when this pulse ends,
        so it holds up none due behind it; a cancelled one is dropped."""
        out = []
        for q in self.queue.take_due(self.clock()):
            if on_since - q.at > self.pulse_s:
                self._late.append(q)
            else:
                q.fired_t = max(q.at, on_since)
                out.append(q)
        return out

    def _report_stuck(self, reason: str) -> None:
        self.counts["stuck"] += 1
        log.critical(reason)
        if self.on_stuck is not None:
            try:
                self.on_stuck(reason)
            except Exception:
                log.exception("pulse thread: reporting a stuck gate failed")

    def _crashed(self, stage: Stage, exc: BaseException) -> bool:
        # A crash in the middle of a pulse must not leave the output energised (with accept
        # wiring, every container would pass); then report it and restart: the pulse
        # thread must outlive any bug.
        try:
            self.device.off()
        except Exception:  # the gate may stay energised: unsure until an off write succeeds
            with contextlib.suppress(Exception):
                self.gate.off_written(self.clock(), False, True)
        p, self._on = self._on, None
        riders, self._riders = self._riders, []
        late, self._late = self._late, []
        if p is not None:  # cut short: reported like a pulse whose write failed
            for q in [p, *riders]:
                q.error = f"pulse thread crashed: {exc!r}"
                with contextlib.suppress(Exception):
                    self._finish(q, "error")
        for q in late:  # missed whatever the crash did
            with contextlib.suppress(Exception):
                self._finish(q, "missed")
        if self.on_crash is not None:
            try:
                self.on_crash(exc)
            except Exception:
                log.exception("pulse thread: reporting its crash failed")
        return not self._stop.is_set()

    def close(self) -> None:
        """Cancel pending pulses, end the thread, leave the output off. Idempotent."""
        self._stop.set()
        self._wake.set()
        self.stage.stop()
        self.stage.join(timeout=2.0)
        self.queue.cancel_all()
        with contextlib.suppress(Exception):  # the device may already be closed
            self.device.off()
