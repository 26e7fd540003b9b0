"""The per-container pipeline: capture -> inference + decision -> audit + release.

Positive release: a container leaves through the good path only on a positive,
recorded, in-time accept. Each container is registered at its trigger with a decision
deadline (gate - margin). Whatever prevents a sure accept - missing, corrupt, black,
frozen or mis-sized frame, non-finite output, backend error, stall, crashed stage, late
decision, queue overflow, GPIO or audit error - rejects it, is audited with its fault
named, and repeated faults raise the alarm. A container still undecided at its deadline
is finalised as a reject by the supervisor, whatever the stage holding it is doing.
Stages run under one supervised loop skeleton (edge.supervise) with heartbeats; the
audit has one writer thread (edge.recorder), which also releases accepts after their
row is committed; the books of what is pending live in edge.ledger, the containers not yet
decided in edge.undecided; a container enters at its trigger through edge.intake.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

import numpy as np

from .alarm import Alarm
from .audit import AuditLog
from .capture import capture_frames
from .config import LineConfig
from .decision import Decision, decide
from .detector import EdgeDetector
from .events import EventLog
from .gpio import LineIO
from .intake import Intake
from .jobs import Job, Outcome
from .ledger import Ledger
from .metrics import RuntimeMetrics
from .postprocess import Detections
from .recorder import Recorder
from .self_test import SelfTest
from .supervise import Stage, StopStage, Watchdog, sd_notify, watchdog_interval_s
from .triggers import Triggers
from .undecided import Undecided
from .verdict import judge

log = logging.getLogger(__name__)
_TICK = 0.05  # s: how often idle stages beat and the supervisor looks at deadlines


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
        self_test: Optional[SelfTest] = None,
    ) -> None:
        self.cfg, self.detector, self.io, self.audit = cfg, detector, io, audit
        self.metrics = metrics
        self.model_hash, self.config_hash, self.clock = model_hash, cfg.digest(), clock
        self.frame_shape = tuple(frame_shape)
        self.names = detector.info.class_names
        self.decide = decide  # the decision rule (simulation injects a crash here)
        self.decision = cfg.decision.in_frame(self.frame_shape[0])  # distances in frame px
        depth = cfg.timing.queue_depth
        self._infer_q: queue.Queue[Tuple[Any, ...]] = queue.Queue(depth)
        self._alarm = Alarm(
            io,
            metrics,
            cfg.gpio.alarm_faults,
            cfg.gpio.alarm_window_s,
            clock,
            cfg.gpio.alarm_energise_to,
        )
        # Every alarm reason on record: queued by whichever thread raises it (the pulse
        # thread too), written by the supervisor's rounds.
        self.events = EventLog(cfg.audit.folder, audit.signing_key)
        self._alarm.on_event = lambda r: self.events.post("alarm", r, audit.last_seq)
        self.ledger = Ledger(metrics, self._alarm, clock, on_outcome)
        self.triggers = Triggers(cfg.gpio)  # recent (trigger time, container)
        self._lock = self.ledger.lock  # one lock for the books and the undecided containers
        self.counts, self.recent = self.ledger.counts, self.ledger.recent
        self.recorder = Recorder(
            cfg,
            audit,
            io,
            self.ledger,
            metrics,
            (model_hash, self.config_hash),
            self.raise_alarm,
            self.triggers.clash,
        )
        self.undecided = Undecided(self.ledger, self.recorder.enqueue, clock)
        self.intake = Intake(
            cfg, io, self.undecided, self.triggers, self.recorder, metrics, self.raise_alarm, clock
        )
        self._stopping = self.intake.stopping  # set first by close(): decide no more
        self.failed: Optional[str] = None  # a stage that stays down: the process must exit
        self.self_test = self_test  # the reference frames, again while the line runs
        self.blind: Optional[str] = None  # why the model can no longer be trusted
        self._holding: Dict[str, Optional[str]] = {}  # stage -> container it is working on
        self._last_frame: Optional[np.ndarray] = None  # capture stage only
        self._took: Deque[float] = deque(maxlen=8)  # s of the last decisions (inference stage)
        io.pulses.on_done = self.recorder.pulse_done
        io.pulses.on_crash = lambda e: self.raise_alarm(f"stage pulses crashed: {e!r}")
        io.pulses.on_stuck = self.raise_alarm
        io.pulses.on_retry = lambda p: self.metrics.gate_retries.inc()
        io.pulses.on_stray = lambda t0, t1, settled, cause: self.recorder.stray(
            self.triggers.gated_in(t0, t1), settled, cause
        )
        self.stages = [
            Stage("capture", self._capture_step, self._crashed, clock),
            Stage("inference", self._infer_step, self._crashed, clock),
            Stage("audit", self._audit_step, self._crashed, clock),
            Stage("supervisor", self._supervise_step, self._crashed, clock),
            Stage("alarm", self._alarm.step, self._crashed, clock),  # the alarm output
        ]
        stall_s = cfg.gpio.delay_ms / 1000  # a step longer than the gate delay is a stall
        self.watchdog = Watchdog([*self.stages, io.pulses.stage], stall_s, notify, clock)
        self._pet_every = min(watchdog_interval_s(), stall_s)
        self._last_pet = 0.0
        self._stale_alarmed: set = set()
        if audit.chain_fault:
            self.raise_alarm(audit.chain_fault)
        if audit.unclean_end:  # the run before was killed or crashed holding containers
            self._unclean_end(audit.unclean_end, audit.last_seq)
        for s in self.stages:
            s.start()

    def _unclean_end(self, holder: str, seq: int) -> None:
        """On record: the containers the run before held undecided got no row; with the
        reject wiring they passed the gate (no process fired their reject pulses): the alarm."""
        why = f"the runtime before ({holder}) ended without closing: what it held has no row"
        if self.intake.reject_wiring:
            self.raise_alarm(why + ", and with the reject wiring those containers PASSED")
        else:
            log.warning("%s (rejected at the gate: no accept pulse)", why)
            self.events.post("unclean_end", why, seq)
        self.audit.unclean_end = None  # on record now: the lock file need not carry it on

    # --- the trigger side ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Called at the trigger edge; never blocks, never raises (`edge.intake`)."""
        self.intake.submit(job)

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every submitted container is decided, audited and released."""
        return self.ledger.drain(timeout, _TICK)

    def close(self) -> None:
        """Stop every stage without ever hanging: what is still in flight is rejected
        ("shutdown") and audited while the audit stage still runs, and so are the triggers
        that come meanwhile, as far as they can be (`edge.intake`). Idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        for s in self.stages[:2]:
            s.stop()
        left = self.undecided.due(math.inf)
        for c in left:
            self.undecided.fail(c.job, "shutdown", "runtime stopped before a decision")
        self.drain(timeout=5.0)  # a trigger meanwhile: a reject on record, its pulse armed
        # Released accepts and armed rejects still need their pulse at the gate: let them
        # land (bounded); a trigger from here whose reject needs a pulse goes unseen.
        self.intake.close_step(self.intake.pulses_closed)
        self.io.pulses.wait_idle(
            timeout=(self.cfg.gpio.delay_ms + self.cfg.gpio.pulse_ms) / 1000 + 0.5
        )
        self.drain(timeout=1.0)  # the rows of the triggers meanwhile (accept wiring)
        self.intake.close_step(self.intake.audit_closed)
        for s in self.stages:
            s.stop()
        for s in self.stages:
            if not s.join(timeout=2.0):
                log.error("stage %s did not stop (stuck in a call); left as a daemon", s.name)
        try:  # an alarm raised while stopping, after its stage's last step
            self._alarm.hold()
        except Exception:
            log.exception("close: writing the alarm output failed")
        self.events.flush()  # what the alarm was raised for while stopping, too

    def holding(self, stage: str) -> Optional[str]:
        """The container a stage is working on now, if any."""
        return self._holding.get(stage)

    # --- stages -------------------------------------------------------------------------
    def _get(self, q: queue.Queue[Any], stage: str) -> Any:
        if self._stopping.is_set() and stage != "audit":
            raise StopStage
        try:
            item = q.get(timeout=_TICK)  # short waits: an idle stage still beats
        except queue.Empty:  # the audit stage writes until close takes no more rows
            if self.intake.audit_closed.is_set() and stage == "audit":
                raise StopStage from None
            return None
        self.metrics.queue.labels(stage).set(q.qsize())
        return item

    def _capture_step(self) -> None:
        job = self._get(self.intake.queue, "capture")
        if job is None or self.undecided.live(job.container_id, "capture") is None:
            return
        self._holding["capture"] = job.container_id
        nxt = self.triggers.next_after(job.trigger_t)
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
            self.undecided.fail(job, "queue_overflow", "inference queue full", captured)
        self.metrics.queue.labels("inference").set(self._infer_q.qsize())
        self._holding["capture"] = None

    def _infer_step(self) -> None:
        if self._infer_q.empty():  # idle: a reference frame, at most one call's delay
            self._self_test_step()
        item = self._get(self._infer_q, "inference")
        if item is None:
            return
        job, frames, fault, reason, captured = item
        c = self.undecided.live(job.container_id, "inference")
        if c is None:
            return
        self._holding["inference"] = job.container_id
        out = Outcome(job.container_id, job.trigger_t, True, reason, fault, job.truth, captured)
        if fault is None and self.blind is not None:
            out.fault, out.reason = "blind_model", self.blind
        elif fault is None and (late := self._too_late(c.deadline)):
            # Rejected without spending the model on it, so an overload drains instead of
            # making every following container late as well.
            out.fault, out.reason = "late", late
        if out.fault is None:
            self._decide(out, frames)
        out.decided_t = self.clock()
        if out.fault is None and out.decided_t > c.deadline:
            late_ms = (out.decided_t - c.deadline) * 1000
            out.reject, out.fault = True, "late"
            out.reason = f"decision {late_ms:.0f} ms past its deadline ({out.reason})"
        if not out.reject and self.self_test is not None:
            self.self_test.accepted(job.container_id)
        self._holding["inference"] = None
        self.undecided.finalize(out)

    def _self_test_step(self) -> None:
        """One reference frame through the model while no container waits for it, when a
        round is due. A container whose frames arrive meanwhile waits one model call (its
        deadline still holds); a line that never leaves the stage idle is never tested,
        and its containers are late already."""
        st = self.self_test
        if st is None or self.blind is not None or self._stopping.is_set():
            return
        found = st.idle_step(lambda im: self.detector.detect_whole([im])[0], self.metrics.reference)
        if found is not None:
            self.blind = f"the model failed its reference frames mid-shift: {found}"
            self.failed = self.blind  # `fod run` exits; a restart checks the frames first
            self.raise_alarm(f"{self.blind}; {st.unchecked()}")

    def _too_late(self, deadline: float) -> str:
        """Why a decision can no longer make `deadline` ("" while it can): past it, or
        less time left than the fastest recent decision took."""
        left, needs = deadline - self.clock(), min(self._took, default=0.0)
        if left < 0:
            return "deadline passed while queued; not inferred"
        if left < needs:
            return (
                f"{left * 1000:.0f} ms left to its deadline, under the {needs * 1000:.0f} ms "
                "of the fastest recent decision; not inferred"
            )
        return ""

    def _decide(self, out: Outcome, frames: List[np.ndarray]) -> None:
        t0, cid = self.clock(), out.container_id
        v = judge(
            frames, self.detector.detect, self._rule, lambda: self.undecided.get(cid) is not None
        )
        out.reject, out.reason, out.fault = v.reject, v.reason, v.fault
        out.image, out.detections = v.image, v.detections
        if v.abandoned:  # on record already (a stall): nothing to time
            return
        took = self.clock() - t0
        self.metrics.latency.labels("inference").observe(took)  # model + rule
        if v.fault is None:
            self._took.append(took)

    def _rule(self, dets: List[Detections]) -> Decision:
        return self.decide(dets, self.names, self.decision)

    def _audit_step(self) -> None:
        out = self._get(self.recorder.queue, "audit")
        if out is not None:
            self._holding["audit"] = out.container_id
            self.recorder.handle(out)
            self._holding["audit"] = None
        self._alarm_stuck("supervisor")  # who watches the watcher: the audit writer does

    def _supervise_step(self) -> None:
        if self._stopping.is_set():
            raise StopStage
        now = self.clock()
        due = self.undecided.due(now)
        for c in due:  # no decision by the deadline: a reject, whatever the stage is doing
            self.undecided.fail(c.job, "stall", f"no decision by the deadline ({c.stage})")
        self._alarm_stuck()
        try:  # a gate write hung in the driver: what it holds up, on record
            self.io.pulses.reap()
        except Exception:  # the deadlines above must go on whatever this does
            log.exception("supervisor: reporting a hung gate write failed")
        st = self.self_test  # no reference round passing for too long: the sight unchecked
        why = st.overdue_alarm() if st is not None and self.blind is None else None
        if why is not None:
            self.raise_alarm(why)
        self.events.flush()
        # Wall time, read by other processes; before the watchdog's tick, so the beat is
        # there when the tick's first READY=1 lets `systemctl restart` return.
        self.metrics.heartbeat.set_to_current_time()
        if now - self._last_pet >= self._pet_every:
            self._last_pet = now
            self.watchdog.tick()
        self._stopping.wait(_TICK)

    def _alarm_stuck(self, only: Optional[str] = None) -> None:
        """Raise the alarm once per stage that missed its beat (`only`: that stage alone).
        The supervisor checks every stage; the audit stage checks the supervisor, whose own
        hang would otherwise show only when systemd's watchdog kills the process."""
        if self._stopping.is_set():  # stages end one by one at close: none is stuck
            return
        for name in self.watchdog.stuck():
            if (only is None or name == only) and name not in self._stale_alarmed:
                self._stale_alarmed.add(name)  # a race between the two costs one more log line
                self.raise_alarm(f"stage {name} is stuck (no heartbeat)")

    def _crashed(self, stage: Stage, exc: BaseException) -> bool:
        """An exception escaped a stage: reject what it held, alarm, restart or fail."""
        cid = self._holding.get(stage.name)
        self._holding[stage.name] = None
        give_up = stage.crashes > self.cfg.timing.max_restarts
        if give_up:  # before its container is decided: whoever sees that sees this too
            self.failed = f"stage {stage.name} crashed {stage.crashes} times"
            log.critical("%s: the runtime stops deciding", self.failed)
        if stage.name == "audit":
            try:
                self.recorder.crashed(exc)
            except Exception:  # logged; the alarm below still goes up
                log.exception("stage audit: finishing its container after the crash failed")
        if cid is not None:
            c = self.undecided.get(cid)
            if c is not None:
                self.undecided.fail(c.job, "thread_crash", f"{stage.name} stage crashed: {exc!r}")
        self.raise_alarm(f"stage {stage.name} crashed: {exc!r}")
        return not give_up and not self._stopping.is_set()

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
        self.ledger.inc(key, n)
