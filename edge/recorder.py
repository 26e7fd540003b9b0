"""The audit stage: record each outcome, then release the accepts.

Positive release: an accept may pass only once its row is committed, so this stage is
the only one that releases. Whatever makes the physical outcome differ from the recorded
one (a release that failed or missed the gate, a pulse that did not happen, this stage
crashing between the commit and the release) is written as an amending row. A row that
cannot be written leaves its container rejected (nothing released it) and is tried once
more as a reject, so it is on record with its fault.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from typing import Callable, List, Optional, Set, Tuple

from .audit import AuditLog, AuditUnavailable
from .config import LineConfig
from .gpio import LineIO
from .jobs import Outcome
from .ledger import Ledger
from .metrics import RuntimeMetrics
from .pulse_queue import Pulse

log = logging.getLogger(__name__)


class Recorder:
    def __init__(
        self,
        cfg: LineConfig,
        audit: AuditLog,
        io: LineIO,
        ledger: Ledger,
        metrics: RuntimeMetrics,
        hashes: Tuple[str, str],  # (model, config): on every row
        raise_alarm: Callable[[str], None],
        # trigger time -> why another trigger is too close for the gate to tell the two
        # containers apart, else None (the runtime keeps the triggers)
        clash: Callable[[float], Optional[str]],
    ) -> None:
        self.cfg, self.audit, self.io, self.ledger, self.metrics = cfg, audit, io, ledger, metrics
        self.hashes, self.raise_alarm, self.clash = hashes, raise_alarm, clash
        self.queue: queue.Queue[Outcome] = queue.Queue(4096)
        self.holding: Optional[Outcome] = None  # the outcome being recorded or released
        # Containers already on record as possibly passed (`stray`).
        self._unsure: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._unsure_lock = threading.Lock()

    def enqueue(self, out: Outcome) -> None:
        try:
            self.queue.put_nowait(out)
        except queue.Full:  # the writer is stuck: no record, so no release: a reject
            self.ledger.inc("unaudited")
            if out.write_failed("audit queue full"):
                self.ledger.count_fault("audit_unavailable")  # beside the row's own fault
            log.error("container %s: audit queue full; rejected unrecorded", out.container_id)
            self.ledger.done(out)
        self.metrics.queue.labels("audit").set(self.queue.qsize())

    def handle(self, out: Outcome) -> None:
        """Record `out`; release it if it is a committed accept."""
        self.holding = out
        try:
            self.audit.record(out.record(*self.hashes), out.image if out.reject else None)
            out.recorded = True
        except AuditUnavailable as e:  # rolled back; this container rejects, the next may record
            log.error("container %s: %s", out.container_id, e)
            if out.write_failed(str(e)):
                self.ledger.count_fault("audit_unavailable")  # beside the row's own fault
            self._record_again(out)
        else:
            head_fault = self.audit.take_head_fault()  # on record, but the disk is failing
            if head_fault:
                self.raise_alarm(head_fault)
            if not out.reject and not out.amends:
                self._release(out)
        self.holding = None
        self.ledger.done(out)

    def crashed(self, exc: BaseException) -> None:
        """The stage crashed holding an outcome. Not yet on record: nothing released it, so
        it is a reject, recorded now; on record as an accept but not released: the gate
        rejects it, so a second row says so. Either way it is finished (never left pending)."""
        out, self.holding = self.holding, None
        if out is None:
            return
        what = f"audit stage crashed: {exc!r}"
        if not out.recorded:
            out.write_failed(what, "thread_crash")
            out.image = None  # the evidence frame may be what broke the write
            self._record_again(out)
        elif not out.reject and not out.amends and not out.released:
            self.amend(out, "thread_crash", f"accept recorded but not released ({what})")
        self.ledger.done(out)

    def _record_again(self, out: Outcome) -> None:
        """One more try after a failed write, so the reject is on record with its fault."""
        try:
            self.audit.record(out.record(*self.hashes))
            out.recorded = True
        except Exception as e:
            log.error("container %s: reject not recorded either: %s", out.container_id, e)
            self.ledger.inc("unaudited")

    def _release(self, out: Outcome) -> None:
        """Only now, with the accept committed, may the container pass."""
        armed = self.ledger.take_armed(out.container_id)
        clash = self.clash(out.trigger_t)
        if clash is not None:  # its pulse would pass the other one too: no release
            self.amend(out, "trigger_conflict", f"accept not released: {clash}")
            return
        try:
            out.released = self.io.release(out.container_id, out.trigger_t, armed)
        except Exception as e:  # a reject: undo whatever the release did before it raised
            why = f"release failed: {type(e).__name__}: {e}"
            try:
                passed = self.io.hold_back(out.container_id, out.trigger_t, armed)
            except Exception as again:
                passed, why = True, f"{why}; holding it back failed too: {again!r}"
            if passed:
                why += ": it may have PASSED the gate"
                self.raise_alarm(f"container {out.container_id}: {why}")
            self.amend(out, "gpio_error", why, passed)
            return
        if not out.released:
            self.amend(out, "late", "accept recorded but its release missed the gate")

    def amend(self, out: Outcome, fault: str, reason: str, passed: bool = False) -> None:
        """A second row for a container whose physical outcome differs from its recorded one."""
        fix = Outcome(
            out.container_id,
            out.trigger_t,
            not passed,
            reason,
            fault,
            out.truth,
            out.captured_t,
            self.ledger.clock(),
            amends=True,
        )
        with self.ledger.lock:
            self.ledger.open()
        self.enqueue(fix)

    def stray(self, gated: List[Tuple[str, float]], settled: Set[str], cause: str) -> None:
        """From the pulse thread (the supervisor's, for a write hung in the driver): the
        gate output may have been energised (outside the pulses planned) at the gate times
        of `gated`, for `cause` (a gate write that blocked or hangs; a gate that may stay
        energised, reported span by span while it lasts). A container whose own pulse does
        not say what happened (`settled`: it fired then or is still to come) goes on record
        at its worst, passed, once (again after a row of its own pulse). With the accept
        wiring that may be a reject released: the alarm."""
        with self._unsure_lock:  # the pulse thread's, or the supervisor's for a hung write
            hit = [(c, t) for c, t in gated if c not in settled and c not in self._unsure]
            for cid, _ in hit:
                self._unsure[cid] = None
            while len(self._unsure) > 256:  # containers long past their gate
                self._unsure.popitem(last=False)
        accept = self.cfg.gpio.energise_to == "accept"
        what = (
            "may have PASSED the gate" if accept else "may have been ejected; on record as passed"
        )
        why = f"the gate output may have been on at its gate time ({cause}): {what}"
        for cid, t in hit:
            self.amend(Outcome(cid, t, True, "", None, None), "gate_uncertain", why, True)
        if hit and accept:
            ids = ", ".join(cid for cid, _ in hit)
            self.raise_alarm(f"{cause}: {ids} may have passed")

    def withdrawn(self, p: Pulse, why: str) -> None:
        """From the trigger side: a released accept's pulse was withdrawn before it fired
        (another trigger beside its own), so the container is rejected at the gate."""
        stub = Outcome(p.tag, p.at - self.cfg.gpio.delay_ms / 1000, True, "", None, None)
        self.amend(stub, "trigger_conflict", f"accept withdrawn: {why}")

    def pulse_done(self, p: Pulse) -> None:
        """From the pulse thread (the supervisor's, for pulses behind a hung write): a pulse
        that did not happen changes the physical outcome."""
        if p.state not in ("missed", "error"):
            return
        with self._unsure_lock:  # a later span over its gate time is on record again
            self._unsure.pop(p.tag, None)
        fault = "gpio_error" if p.state == "error" else "late"
        what = p.error or "the pulse thread woke after the gate"
        stub = Outcome(p.tag, p.at - self.cfg.gpio.delay_ms / 1000, True, "", None, None)
        if self.cfg.gpio.energise_to == "accept" and p.fired_t is not None:
            # Failed once the gate went on at its time: the controller latched that edge.
            why = f"accept pulse failed after it went on at its gate time ({what}): passed"
            self.amend(stub, fault, why, True)
        elif self.cfg.gpio.energise_to == "accept":
            self.amend(stub, fault, f"accept pulse {p.state} ({what}): rejected at the gate")
        else:  # the reject pulse did not happen: the container went through the good path
            self.amend(stub, fault, f"reject pulse {p.state} ({what}): PASSED the gate", True)
            self.raise_alarm(f"container {p.tag}: reject pulse {p.state}; it passed")
