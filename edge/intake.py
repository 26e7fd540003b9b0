"""A container at its trigger edge (`Runtime.submit`): stamped, its reject pulse armed
(reject wiring), on the books of undecided containers and queued for its frames, or a
reject on record at once (a trigger time of no use, a full queue, the runtime stopping).

It runs on the trigger input's thread (the pin factory's), where an exception would lose
the container - no row, and with the reject wiring no reject pulse armed, so it would
pass - and may end that thread's handling of every later edge. So `submit` never raises:
whatever fails in it, the container is rejected on record ("thread_crash") and the alarm
goes up.

The line goes on triggering while the runtime stops (`Runtime.close`, at every restart),
in three steps: `stopping` - a trigger is a reject on record, its reject pulse armed; then
`pulses_closed` - no pulse a trigger needs is waited for any more: with the reject wiring
it goes unseen, with the accept wiring (no pulse needed) it is still on record; then
`audit_closed` - no row is written: unseen. An unseen container (no row; with the reject
wiring no pulse, so it passes, as at any stopped unit) is counted and logged. A step is
taken (`close_step`) only between two triggers: one already past the step's check (its
reject pulse about to be armed, its row about to be queued) gets what that check
promised it - close waits for its pulse, the audit stage writes its row.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from typing import Callable, Optional, Tuple

from .config import LineConfig
from .gpio import LineIO
from .jobs import InFlight, Job, Outcome
from .metrics import RuntimeMetrics
from .recorder import Recorder
from .triggers import Triggers
from .undecided import Undecided

log = logging.getLogger(__name__)
_FUTURE_S = 1.0  # s: a trigger stamped later than now by more is not of this clock
_STEP_WAIT_S = 1.0  # s: close waits this long at most for a trigger midway (never hangs)


class Intake:
    def __init__(
        self,
        cfg: LineConfig,
        io: LineIO,
        undecided: Undecided,
        triggers: Triggers,
        recorder: Recorder,
        metrics: RuntimeMetrics,
        raise_alarm: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.cfg, self.io, self.undecided, self.triggers = cfg, io, undecided, triggers
        self.recorder, self.metrics, self.raise_alarm, self.clock = (
            recorder,
            metrics,
            raise_alarm,
            clock,
        )
        self.queue: queue.Queue[Job] = queue.Queue(cfg.timing.queue_depth)  # to capture
        self.stopping = threading.Event()  # `close`, step by step (the module's docstring)
        self.pulses_closed, self.audit_closed = threading.Event(), threading.Event()
        self.reject_wiring = cfg.gpio.energise_to == "reject"
        self._midway = threading.RLock()  # held by a trigger from its checks to its end

    def submit(self, job: Job) -> None:
        """Called at the trigger edge; never blocks (but for a `close_step`), never raises."""
        with self._midway:
            if self.audit_closed.is_set() or (self.pulses_closed.is_set() and self.reject_wiring):
                self._unseen(job)
                return
            c: Optional[InFlight] = None
            try:
                c, stamped = self._open(job)
                self._enter(job, stamped)
            except Exception as e:
                self._failed(job, c, e)

    def close_step(self, step: threading.Event) -> None:
        """Take one of close's steps (`pulses_closed`, `audit_closed`) between two triggers:
        what a trigger midway was promised by the step's check before holds (its pulse armed
        before close waits for the pulses, its row queued before the audit stops)."""
        got = self._midway.acquire(timeout=_STEP_WAIT_S)
        try:
            if not got:  # a trigger stuck midway: what it does from here may not hold
                log.error("close: a trigger handler held up for %.1f s; stopping on", _STEP_WAIT_S)
            step.set()
        finally:
            if got:
                self._midway.release()

    def _open(self, job: Job) -> Tuple[InFlight, Optional[float]]:
        """Stamp the container, arm its reject pulse (reject wiring), put it on the books
        -> it, and its trigger time where that was unusable (None: used as given)."""
        now, stamped = self.clock(), job.trigger_t
        bad = not math.isfinite(stamped) or stamped > now + _FUTURE_S
        if bad:  # no gate time can be derived from it: stamped now (it is at the trigger)
            job.trigger_t = now
        c = InFlight(
            job,
            job.trigger_t + (self.cfg.gpio.delay_ms - self.cfg.timing.decision_margin_ms) / 1000,
            self.io.arm(job.container_id, job.trigger_t),
        )
        self.undecided.open(c)
        return c, (stamped if bad else None)

    def _enter(self, job: Job, unusable: Optional[float]) -> None:
        with self.undecided.lock:
            self.triggers.add(job.trigger_t, job.container_id)
        # An accept already released beside this trigger (a decision faster than the window)
        # is withdrawn: its pulse would pass this container too.
        for p in self.io.withdraw_accepts(job.trigger_t, self.triggers.clash_s):
            self.recorder.withdrawn(p, f"another trigger ({job.container_id}) beside its own")
        if unusable is not None:
            why = f"trigger time {unusable!r} unusable: stamped on arrival"
            self.undecided.fail(job, "bad_trigger", why)
            return
        if self.stopping.is_set():  # its reject pulse (reject wiring) is armed: on record
            self.undecided.fail(job, "shutdown", "triggered while the runtime stopped")
            return
        try:
            self.queue.put_nowait(job)
        except queue.Full:
            self.undecided.fail(job, "queue_overflow", "capture queue full")
        self.metrics.queue.labels("capture").set(self.queue.qsize())

    def _unseen(self, job: Job) -> None:
        self.undecided.ledger.inc("unseen")
        log.error(
            "container %s triggered after the runtime stopped: not on record, %s",
            job.container_id,
            "and it PASSES (reject wiring)" if self.reject_wiring else "rejected (no pulse)",
        )

    def _failed(self, job: Job, c: Optional[InFlight], exc: Exception) -> None:
        """`submit` raised: the container is rejected on record (put on the books first if
        it was not, with its reject pulse armed), and the alarm goes up. Where its reject
        pulse cannot be armed (reject wiring), nothing ejects it: a second row says it passed."""
        cid, reason = job.container_id, f"the trigger handler failed: {exc!r}"
        log.error("container %s: %s", cid, reason, exc_info=exc)
        alarm = reason
        try:
            unarmed: Optional[Exception] = None
            if c is None:  # not on the books: its reject pulse (reject wiring), then its row
                t = job.trigger_t
                if not isinstance(t, float) or not math.isfinite(t) or t > self.clock():
                    job.trigger_t = self.clock()
                armed = None
                try:
                    armed = self.io.arm(cid, job.trigger_t)
                except Exception as e:  # reject wiring: nothing fires for it
                    log.exception("container %s: arming its reject pulse failed", cid)
                    unarmed = e
                self.undecided.open(InFlight(job, job.trigger_t, armed))
            self.undecided.fail(job, "thread_crash", reason)
            if unarmed is not None and self.reject_wiring:
                alarm = f"its reject pulse could not be armed ({unarmed!r}): PASSED the gate"
                stub = Outcome(cid, job.trigger_t, True, "", None, job.truth)
                self.recorder.amend(stub, "gpio_error", alarm, passed=True)
        finally:
            self.raise_alarm(f"container {cid}: {alarm}")
