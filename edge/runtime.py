"""The per-container pipeline: capture -> inference + decision -> audit + release.

Positive release: a container leaves through the good path only on a positive,
recorded, in-time accept. Each container is registered at its trigger with a decision
deadline (gate - margin). Whatever prevents a sure accept - missing, corrupt, black,
frozen or mis-sized frame, non-finite output, backend error, stall, crashed stage, late
decision, queue overflow, GPIO or audit error - rejects it, is audited with its fault
named, and repeated faults raise the alarm. A container still undecided at its deadline
is finalised as a reject by the supervisor, whatever the stage holding it is doing.
Stages run under one supervised loop skeleton (edge.supervise) with heartbeats; the
audit has one writer thread, which also releases accepts after their row is committed.
Memory is bounded: counters and a rolling window, never a per-container history.
"""

from __future__ import annotations

import collections
import logging
import math
import queue
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from .alarm import Alarm
from .audit import AuditLog, AuditUnavailable
from .capture import capture_frames
from .config import LineConfig
from .decision import Decision, decide
from .detector import EdgeDetector
from .gpio import LineIO, Pulse
from .jobs import InFlight, Job, Outcome
from .metrics import RuntimeMetrics
from .postprocess import Detections
from .supervise import Stage, StopStage, Watchdog, sd_notify, watchdog_interval_s
from .verdict import judge

log = logging.getLogger(__name__)
_TICK = 0.05  # s: how often idle stages beat and the supervisor looks at deadlines
_FUTURE_S = 1.0  # s: a trigger stamped later than now by more is not of this clock


class Runtime:
    def __init__(
        self,
        cfg: LineConfig,
        detector: EdgeDetector,
        io: LineIO,
        audit: AuditLog,
        metrics: RuntimeMetrics,
        model_hash: str,
        frame_shape: Tuple[int, ...],
        clock: Callable[[], float] = time.monotonic,
        on_outcome: Optional[Callable[[Outcome], None]] = None,
        notify: Callable[[str], bool] = sd_notify,
    ) -> None:
        self.cfg, self.detector, self.io, self.audit = cfg, detector, io, audit
        self.metrics = metrics
        self.model_hash, self.config_hash, self.clock = model_hash, cfg.digest(), clock
        self.frame_shape, self.on_outcome = tuple(frame_shape), on_outcome
        self.names = detector.info.class_names
        self.decide = decide  # the decision rule (simulation injects a crash here)
        depth = cfg.timing.queue_depth
        self._capture_q: queue.Queue[Job] = queue.Queue(depth)
        self._infer_q: queue.Queue[Tuple[Any, ...]] = queue.Queue(depth)
        self._audit_q: queue.Queue[Outcome] = queue.Queue(4096)
        self._inflight: Dict[str, InFlight] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0  # finalised or in flight, not yet through the audit stage
        self._alarm = Alarm(io, metrics, cfg.gpio.alarm_faults, cfg.gpio.alarm_window_s, clock)
        self.failed: Optional[str] = None  # a stage that stays down: the process must exit
        self.counts: Dict[str, int] = collections.Counter()
        self.recent: Deque[Outcome] = collections.deque(maxlen=256)  # a rolling window
        self._stopping = threading.Event()
        self._holding: Dict[str, Optional[str]] = {}  # stage -> container it is working on
        self._auditing: Optional[Outcome] = None  # the outcome the audit stage holds
        self._armed: Dict[str, Pulse] = {}  # reject wiring: container -> its armed pulse
        self._last_frame: Optional[np.ndarray] = None  # capture stage only
        self._triggers: Deque[float] = collections.deque(maxlen=64)  # recent trigger times
        io.pulses.on_done = self._pulse_done
        io.pulses.on_crash = lambda e: self.raise_alarm(f"stage pulses crashed: {e!r}")
        self.stages = [
            Stage("capture", self._capture_step, self._crashed, clock),
            Stage("inference", self._infer_step, self._crashed, clock),
            Stage("audit", self._audit_step, self._crashed, clock),
            Stage("supervisor", self._supervise_step, self._crashed, clock),
        ]
        stall_s = cfg.gpio.delay_ms / 1000  # a step longer than the gate delay is a stall
        self.watchdog = Watchdog([*self.stages, io.pulses.stage], stall_s, notify, clock)
        self._pet_every = min(watchdog_interval_s(), stall_s)
        self._last_pet = 0.0
        self._stale_alarmed: set = set()
        if audit.chain_fault:
            self.raise_alarm(audit.chain_fault)
        for s in self.stages:
            s.start()

    # --- the trigger side ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Called at the trigger edge; never blocks. A full queue rejects the container."""
        now, stamped = self.clock(), job.trigger_t
        bad = not math.isfinite(stamped) or stamped > now + _FUTURE_S
        if bad:  # no gate time can be derived from it: stamped now (it is at the trigger)
            job.trigger_t = now
        c = InFlight(
            job,
            job.trigger_t + (self.cfg.gpio.delay_ms - self.cfg.timing.decision_margin_ms) / 1000,
            self.io.arm(job.container_id, job.trigger_t),
        )
        with self._lock:
            self._pending += 1
            self._inflight[job.container_id] = c
            self._triggers.append(job.trigger_t)
            if c.armed is not None:
                self._armed[job.container_id] = c.armed
        if bad:
            self._finalize(
                self._fail(
                    job, "bad_trigger", f"trigger time {stamped!r} unusable: stamped on arrival"
                )
            )
            return
        try:
            self._capture_q.put_nowait(job)
        except queue.Full:
            self._finalize(self._fail(job, "queue_overflow", "capture queue full"))
        self.metrics.queue.labels("capture").set(self._capture_q.qsize())

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every submitted container is decided, audited and released."""
        end = self.clock() + timeout
        with self._idle:
            while self._pending:
                left = end - self.clock()
                if left <= 0:
                    return False
                self._idle.wait(min(left, _TICK))
        return True

    def close(self) -> None:
        """Stop every stage without ever hanging: what is still in flight is rejected
        ("shutdown") and audited while the audit stage still runs. Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for s in self.stages[:2]:
            s.stop()
        with self._lock:
            left = list(self._inflight.values())
        for c in left:
            self._finalize(self._fail(c.job, "shutdown", "runtime stopped before a decision"))
        self.drain(timeout=5.0)
        # Released accepts still need their pulse at the gate: let them land (bounded).
        self.io.pulses.wait_idle(
            timeout=(self.cfg.gpio.delay_ms + self.cfg.gpio.pulse_ms) / 1000 + 0.5
        )
        for s in self.stages:
            s.stop()
        for s in self.stages:
            if not s.join(timeout=2.0):
                log.error("stage %s did not stop (stuck in a call); left as a daemon", s.name)

    def holding(self, stage: str) -> Optional[str]:
        """The container a stage is working on now, if any."""
        return self._holding.get(stage)

    # --- outcomes -----------------------------------------------------------------------
    @staticmethod
    def _fail(job: Job, fault: str, reason: str, captured_t: float = 0.0) -> Outcome:
        return Outcome(job.container_id, job.trigger_t, True, reason, fault, job.truth, captured_t)

    def _live(self, container_id: str, stage: str) -> Optional[InFlight]:
        """The container if it is still undecided (the supervisor may have finalised it)."""
        with self._lock:
            c = self._inflight.get(container_id)
            if c is not None:
                c.stage = stage
            return c

    def _finalize(self, out: Outcome) -> bool:
        """The first outcome of a container wins; later ones (a stage that woke up after
        its deadline) are counted and dropped. Every outcome goes to the audit stage."""
        with self._lock:
            c = self._inflight.pop(out.container_id, None)
            if c is None:  # already finalised (popped): this outcome came too late
                self.counts["superseded"] += 1
                return False
        if out.decided_t == 0.0:
            out.decided_t = self.clock()
        self._enqueue_audit(out)
        return True

    def _enqueue_audit(self, out: Outcome) -> None:
        try:
            self._audit_q.put_nowait(out)
        except queue.Full:  # the writer is stuck: no record, so no release: a reject
            self._inc("unaudited")
            self._count_fault("audit_unavailable")
            log.error("container %s: audit queue full; rejected unrecorded", out.container_id)
            self._done(out)
        self.metrics.queue.labels("audit").set(self._audit_q.qsize())

    def _done(self, out: Outcome) -> None:
        if not out.amends:
            with self._lock:
                self._armed.pop(out.container_id, None)  # a reject keeps its pulse armed
                self.counts["reject" if out.reject else "accept"] += 1
            self.metrics.containers.labels("reject" if out.reject else "accept").inc()
            self.metrics.latency.labels("total").observe(self.clock() - out.trigger_t)
        if out.fault is not None:
            self._count_fault(out.fault)
        out.image = None  # recorded: the frame need not outlive the audit row
        self.recent.append(out)
        try:
            if self.on_outcome is not None:
                self.on_outcome(out)
        finally:  # a failing hook is a crash of its stage, never a container left pending
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    # --- stages -------------------------------------------------------------------------
    def _get(self, q: queue.Queue[Any], stage: str) -> Any:
        if self._stopping.is_set() and stage != "audit":
            raise StopStage
        try:
            item = q.get(timeout=_TICK)  # short waits: an idle stage still beats
        except queue.Empty:
            if self._stopping.is_set() and stage == "audit":
                raise StopStage from None
            return None
        self.metrics.queue.labels(stage).set(q.qsize())
        return item

    def _capture_step(self) -> None:
        job = self._get(self._capture_q, "capture")
        if job is None or self._live(job.container_id, "capture") is None:
            return
        self._holding["capture"] = job.container_id
        with self._lock:
            nxt = min((t for t in self._triggers if t > job.trigger_t), default=float("inf"))
        cap = capture_frames(
            job.read_frame,
            job.trigger_t,
            nxt,
            self.cfg.camera.frames,
            self.frame_shape,
            self._last_frame,  # frame 0 vs the last one seen: a driver repeating its buffer
            self.cfg.camera.frame_timeout_ms,
            self.clock,
        )
        self._inc("stale_frames", cap.stale)
        self._last_frame = cap.frames[-1] if cap.frames else self._last_frame
        captured = self.clock()
        self.metrics.latency.labels("capture").observe(captured - job.trigger_t)
        try:
            self._infer_q.put_nowait((job, cap.frames, cap.fault, cap.reason, captured))
        except queue.Full:
            self._finalize(self._fail(job, "queue_overflow", "inference queue full", captured))
        self.metrics.queue.labels("inference").set(self._infer_q.qsize())
        self._holding["capture"] = None

    def _infer_step(self) -> None:
        item = self._get(self._infer_q, "inference")
        if item is None:
            return
        job, frames, fault, reason, captured = item
        c = self._live(job.container_id, "inference")
        if c is None:
            return
        self._holding["inference"] = job.container_id
        out = Outcome(job.container_id, job.trigger_t, True, reason, fault, job.truth, captured)
        if fault is None and self.clock() > c.deadline:
            # Already too late: reject without spending the model on it, so an overload
            # drains instead of making every following container late as well.
            out.fault, out.reason = "late", "deadline passed while queued; not inferred"
        if out.fault is None:
            self._decide(out, frames)
        out.decided_t = self.clock()
        if out.fault is None and out.decided_t > c.deadline:
            late_ms = (out.decided_t - c.deadline) * 1000
            out.reject, out.fault = True, "late"
            out.reason = f"decision {late_ms:.0f} ms past its deadline ({out.reason})"
        self._holding["inference"] = None
        self._finalize(out)

    def _decide(self, out: Outcome, frames: List[np.ndarray]) -> None:
        t0 = self.clock()
        v = judge(frames, self.detector.detect, self._rule)
        self.metrics.latency.labels("inference").observe(self.clock() - t0)  # model + rule
        out.reject, out.reason, out.fault = v.reject, v.reason, v.fault
        out.image, out.detections = v.image, v.detections

    def _rule(self, dets: List[Detections]) -> Decision:
        return self.decide(dets, self.names, self.cfg.decision)

    def _audit_step(self) -> None:
        out = self._get(self._audit_q, "audit")
        if out is None:
            return
        self._holding["audit"], self._auditing = out.container_id, out
        try:
            self.audit.record(
                out.record(self.model_hash, self.config_hash), out.image if out.reject else None
            )
            out.recorded = True
        except AuditUnavailable as e:  # rolled back; this container rejects, the next may record
            log.error("container %s: %s", out.container_id, e)
            if out.write_failed(str(e)):
                self._count_fault("audit_unavailable")  # beside the row's own fault
            self._record_again(out)
        else:
            if not out.reject and not out.amends:
                self._release(out)
        self._holding["audit"], self._auditing = None, None
        self._done(out)

    def _record_again(self, out: Outcome) -> None:
        """One more try after a failed write, so the reject is on record with its fault."""
        try:
            self.audit.record(out.record(self.model_hash, self.config_hash))
            out.recorded = True
        except Exception as e:
            log.error("container %s: reject not recorded either: %s", out.container_id, e)
            self._inc("unaudited")

    def _audit_crashed(self, out: Outcome, exc: BaseException) -> None:
        """The audit stage crashed holding `out`. Not yet on record: nothing released it, so
        it is a reject, recorded now; on record as an accept but not released: the gate
        rejects it, so a second row says so. Either way it is finished (never left pending)."""
        what = f"audit stage crashed: {exc!r}"
        if not out.recorded:
            out.write_failed(what, "thread_crash")
            out.image = None  # the evidence frame may be what broke the write
            self._record_again(out)
        elif not out.reject and not out.amends and not out.released:
            self._amend(out, "thread_crash", f"accept recorded but not released ({what})")
        self._done(out)

    def _release(self, out: Outcome) -> None:
        """Only now, with the accept committed, may the container pass."""
        with self._lock:
            armed = self._armed.pop(out.container_id, None)
        try:
            out.released = self.io.release(out.container_id, out.trigger_t, armed)
        except Exception as e:  # the output failed: no release, so a reject
            self._amend(out, "gpio_error", f"release failed: {type(e).__name__}: {e}")
            return
        if not out.released:
            self._amend(out, "late", "accept recorded but its release missed the gate")

    def _amend(self, out: Outcome, fault: str, reason: str, passed: bool = False) -> None:
        """A second row for a container whose physical outcome differs from its recorded one."""
        fix = Outcome(
            out.container_id,
            out.trigger_t,
            not passed,
            reason,
            fault,
            out.truth,
            out.captured_t,
            self.clock(),
            amends=True,
        )
        with self._lock:
            self._pending += 1
        self._enqueue_audit(fix)

    def _pulse_done(self, p: Pulse) -> None:
        """From the pulse thread: a pulse that did not happen changes the physical outcome."""
        if p.state not in ("missed", "error"):
            return
        fault = "gpio_error" if p.state == "error" else "late"
        what = p.error or "the pulse thread woke after the gate"
        stub = Outcome(p.tag, p.at - self.cfg.gpio.delay_ms / 1000, True, "", None, None)
        if self.cfg.gpio.energise_to == "accept":
            self._amend(stub, fault, f"accept pulse {p.state} ({what}): rejected at the gate")
        else:  # the reject pulse did not happen: the container went through the good path
            self._amend(stub, fault, f"reject pulse {p.state} ({what}): PASSED the gate", True)
            self.raise_alarm(f"container {p.tag}: reject pulse {p.state}; it passed")

    def _supervise_step(self) -> None:
        if self._stopping.is_set():
            raise StopStage
        now = self.clock()
        with self._lock:
            due = [c for c in self._inflight.values() if now > c.deadline]
        for c in due:  # no decision by the deadline: a reject, whatever the stage is doing
            self._finalize(self._fail(c.job, "stall", f"no decision by the deadline ({c.stage})"))
        for name in self.watchdog.healthy():
            if name not in self._stale_alarmed:
                self._stale_alarmed.add(name)
                self.raise_alarm(f"stage {name} is stuck (no heartbeat)")
        if now - self._last_pet >= self._pet_every:
            self._last_pet = now
            self.watchdog.tick()
        self._stopping.wait(_TICK)

    def _crashed(self, stage: Stage, exc: BaseException) -> bool:
        """An exception escaped a stage: reject what it held, alarm, restart or fail."""
        cid = self._holding.get(stage.name)
        self._holding[stage.name] = None
        if stage.name == "audit" and self._auditing is not None:
            out, self._auditing = self._auditing, None
            try:
                self._audit_crashed(out, exc)
            except Exception:  # logged; the alarm below still goes up
                log.exception("container %s: finishing after the crash failed", out.container_id)
        if cid is not None:
            with self._lock:
                c = self._inflight.get(cid)
            if c is not None:
                self._finalize(
                    self._fail(c.job, "thread_crash", f"{stage.name} stage crashed: {exc!r}")
                )
        self.raise_alarm(f"stage {stage.name} crashed: {exc!r}")
        if stage.crashes > self.cfg.timing.max_restarts:
            self.failed = f"stage {stage.name} crashed {stage.crashes} times"
            log.critical("%s: the runtime stops deciding", self.failed)
            return False
        return not self._stopping.is_set()

    # --- faults and the alarm -----------------------------------------------------------
    @property
    def alarm(self) -> bool:
        return self._alarm.raised

    @property
    def alarm_reasons(self) -> List[str]:
        return list(self._alarm.reasons)

    def raise_alarm(self, reason: str) -> None:
        self._alarm.raise_(reason)

    def _inc(self, key: str, n: int = 1) -> None:
        with self._lock:  # several stages count: no lost increments
            self.counts[key] += n

    def _count_fault(self, fault: str) -> None:
        self._inc(f"fault:{fault}")
        self._alarm.count(fault)
