"""The per-container pipeline: capture -> inference + decision -> audit -> actuation.

Three threads joined by bounded queues; times from the monotonic clock. Whatever
prevents a sure accept (missing or corrupt frame, backend error, a decision later
than its deadline, a full queue, a GPIO or audit failure) rejects the container,
counts a fault with its reason and, after `alarm_faults` faults within
`alarm_window_s`, raises the alarm output. Nothing is dropped silently.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional

import numpy as np

from .audit import AuditLog, AuditUnavailable, ContainerRecord
from .config import LineConfig
from .decision import decide
from .detector import EdgeDetector
from .gpio import LineIO
from .metrics import RuntimeMetrics

log = logging.getLogger(__name__)

FAULTS = (
    "camera_drop",
    "corrupt_frame",
    "backend_error",
    "late",
    "queue_overflow",
    "gpio_error",
    "audit_unavailable",
)
_STOP = object()


@dataclass
class Job:
    container_id: str
    trigger_t: float  # monotonic seconds at the trigger edge
    read_frame: Callable[[], Optional[np.ndarray]]  # the camera, for this container's frames
    truth: Optional[str] = None  # accept | reject, known in simulation only


@dataclass
class Outcome:
    container_id: str
    trigger_t: float
    reject: bool
    reason: str
    fault: Optional[str]
    truth: Optional[str]
    captured_t: float = 0.0
    decided_t: float = 0.0
    pulse: bool = False  # an ejector pulse was scheduled
    detections: List[List[List[float]]] = field(default_factory=list)
    image: Optional[np.ndarray] = None  # a reject's evidence frame, saved with its audit row


class Runtime:
    def __init__(
        self,
        cfg: LineConfig,
        detector: EdgeDetector,
        io: LineIO,
        audit: AuditLog,
        metrics: RuntimeMetrics,
        model_hash: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.detector, self.io, self.audit, self.metrics = (
            cfg,
            detector,
            io,
            audit,
            metrics,
        )
        self.model_hash, self.config_hash, self.clock = model_hash, cfg.digest(), clock
        self.names = detector.info.class_names
        depth = cfg.timing.queue_depth
        self._capture_q: queue.Queue[Any] = queue.Queue(depth)
        self._infer_q: queue.Queue[Any] = queue.Queue(depth)
        self._act_q: queue.Queue[Any] = queue.Queue(1024)
        self._fault_times: Deque[float] = collections.deque()
        self._audit_down = False
        self.alarm = False
        self.outcomes: List[Outcome] = []
        self._pending = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._threads = [
            threading.Thread(target=self._capture_loop, name="capture", daemon=True),
            threading.Thread(target=self._infer_loop, name="inference", daemon=True),
            threading.Thread(target=self._act_loop, name="actuation", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # --- the trigger side ---------------------------------------------------------------
    def submit(self, job: Job) -> None:
        """Called at the trigger edge; never blocks. A full queue rejects the container."""
        with self._lock:
            self._pending += 1
        try:
            self._capture_q.put_nowait(job)
        except queue.Full:
            self._to_act(self._overflow(job, "capture"))
        self.metrics.queue.labels("capture").set(self._capture_q.qsize())

    def drain(self, timeout: float = 60.0) -> bool:
        """Wait until every submitted container is decided, audited and actuated."""
        end = self.clock() + timeout
        with self._idle:
            while self._pending:
                left = end - self.clock()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        self._capture_q.put(_STOP)
        for t in self._threads:
            t.join(timeout=10.0)

    # --- stages -------------------------------------------------------------------------
    @staticmethod
    def _overflow(job: Job, stage: str, captured_t: float = 0.0) -> Outcome:
        """The fail-safe outcome of a container that found the `stage` queue full."""
        return Outcome(
            job.container_id,
            job.trigger_t,
            True,
            f"{stage} queue full",
            "queue_overflow",
            job.truth,
            captured_t,
        )

    def _deadline(self, trigger_t: float) -> float:
        return trigger_t + (self.cfg.gpio.delay_ms - self.cfg.timing.decision_margin_ms) / 1000

    def _capture_loop(self) -> None:
        while True:
            job = self._capture_q.get()
            if job is _STOP:
                self._infer_q.put(_STOP)
                return
            frames: List[np.ndarray] = []
            fault, reason = None, ""
            shape = None
            for i in range(self.cfg.camera.frames):
                t = self.clock()
                try:
                    f = job.read_frame()
                except Exception as e:  # a camera driver fails in its own ways
                    f, fault, reason = None, "camera_drop", f"frame {i}: camera error: {e}"
                late = (self.clock() - t) * 1000 > self.cfg.camera.frame_timeout_ms
                if fault:
                    break
                if f is None or late:
                    fault, reason = "camera_drop", f"frame {i} of {self.cfg.camera.frames} missing"
                    break
                if (
                    not (f.ndim == 2 or (f.ndim == 3 and f.shape[2] == 3))  # grey or RGB
                    or f.dtype != np.uint8
                    or min(f.shape[:2]) < 32
                    or (shape is not None and f.shape != shape)
                ):
                    fault, reason = (
                        "corrupt_frame",
                        f"frame {i} corrupt (shape {f.shape}, {f.dtype})",
                    )
                    break
                shape = f.shape
                frames.append(f)
            captured = self.clock()
            self.metrics.latency.labels("capture").observe(captured - job.trigger_t)
            try:
                self._infer_q.put_nowait((job, frames, fault, reason, captured))
            except queue.Full:
                self._to_act(self._overflow(job, "inference", captured))
            self.metrics.queue.labels("inference").set(self._infer_q.qsize())

    def _infer_loop(self) -> None:
        while True:
            item = self._infer_q.get()
            if item is _STOP:
                self._act_q.put(_STOP)
                return
            job, frames, fault, reason, captured = item
            out = Outcome(job.container_id, job.trigger_t, True, reason, fault, job.truth, captured)
            if fault is None and self.clock() > self._deadline(job.trigger_t):
                # Already too late: reject without spending the model on it, so an overload
                # drains instead of making every following container late as well.
                out.fault, out.reason = "late", "deadline passed while queued; not inferred"
            if fault is None and out.fault is None:
                t0 = self.clock()
                try:
                    dets = [self.detector.detect([f])[0] for f in frames]
                    d = decide(dets, self.names, self.cfg.decision)
                    out.reject, out.reason = d.reject, d.reason
                    if d.reject:  # keep the frame with the strongest detection
                        top = [float(x.scores.max()) if len(x) else -1.0 for x in dets]
                        out.image = frames[int(np.argmax(top))]
                    out.detections = [
                        [
                            [*map(float, b), float(s), float(lab)]
                            for b, s, lab in zip(x.boxes, x.scores, x.labels)
                        ]
                        for x in dets
                    ]
                except Exception as e:  # any backend failure is a reject, never an accept
                    out.reject, out.fault, out.reason = True, "backend_error", f"backend error: {e}"
                self.metrics.latency.labels("inference").observe(self.clock() - t0)
            out.decided_t = self.clock()
            if out.fault is None and out.decided_t > self._deadline(job.trigger_t):
                late_ms = (out.decided_t - self._deadline(job.trigger_t)) * 1000
                out.reject, out.fault = True, "late"
                out.reason = f"decision {late_ms:.0f} ms past its deadline ({out.reason})"
            if out.fault is None and self._audit_down:
                out.reject, out.fault, out.reason = (
                    True,
                    "audit_unavailable",
                    "audit trail unavailable",
                )
            self._to_act(out)

    def _to_act(self, out: Outcome) -> None:
        try:
            self._act_q.put_nowait(out)
        except queue.Full:  # last resort: actuate from here, still fail-safe
            self._actuate(out)

    def _act_loop(self) -> None:
        while True:
            out = self._act_q.get()
            if out is _STOP:
                return
            self._actuate(out)

    def _record(self, out: Outcome, rec: ContainerRecord) -> None:
        try:
            self.audit.record(rec, out.image if out.reject else None)
            self._audit_down = False
        except AuditUnavailable as e:
            self._audit_down = True
            if not out.reject or out.fault is None:
                out.reject, out.fault = True, "audit_unavailable"
                out.reason = f"not recorded ({e}); {out.reason}"
            log.error("container %s: %s", out.container_id, e)
        out.image = None  # recorded: the frame need not outlive the audit row

    def _pulse(self, out: Outcome) -> None:
        try:
            out.pulse = self.io.act(out.trigger_t, out.reject)
        except Exception as e:  # a GPIO failure: counted and alarmed; the wiring decides the rest
            out.fault = out.fault or "gpio_error"
            log.error("container %s: GPIO error: %s", out.container_id, e)

    def _actuate(self, out: Outcome) -> None:
        if out.decided_t == 0.0:
            out.decided_t = self.clock()
        rec = ContainerRecord(
            out.container_id,
            int(out.trigger_t * 1e9),
            int(out.decided_t * 1e9),
            "reject" if out.reject else "accept",
            out.reason,
            out.fault,
            out.detections,
            self.model_hash,
            self.config_hash,
        )
        if out.reject:  # a reject's pulse never waits on the disk (its PNG takes 20-40 ms)
            self._pulse(out)
            self._record(out, rec)
        else:  # an accept is recorded first: if it cannot be, it becomes a reject
            self._record(out, rec)
            self._pulse(out)
        if out.fault is not None:
            self._count_fault(out.fault)
        self.metrics.containers.labels("reject" if out.reject else "accept").inc()
        self.metrics.latency.labels("total").observe(self.clock() - out.trigger_t)
        with self._idle:
            self.outcomes.append(out)
            self._pending -= 1
            self._idle.notify_all()

    def _count_fault(self, fault: str) -> None:
        now = self.clock()
        self.metrics.faults.labels(fault).inc()
        self._fault_times.append(now)
        while self._fault_times and now - self._fault_times[0] > self.cfg.gpio.alarm_window_s:
            self._fault_times.popleft()
        if len(self._fault_times) >= self.cfg.gpio.alarm_faults and not self.alarm:
            self.alarm = True
            self.metrics.alarm.set(1)
            self.io.set_alarm(True)
            log.error(
                "alarm raised: %d faults within %.0f s",
                len(self._fault_times),
                self.cfg.gpio.alarm_window_s,
            )
