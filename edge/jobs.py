"""What flows through the runtime: a container's job, its outcome, and the fault classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import numpy as np

from .audit import ContainerRecord
from .pulse_queue import Pulse

FAULTS = (
    "camera_drop",
    "corrupt_frame",
    "frame_health",
    "bad_output",
    "blind_model",
    "backend_error",
    "late",
    "stall",
    "thread_crash",
    "queue_overflow",
    "gpio_error",
    "gate_uncertain",  # a blocked gate write: the gate may have been on at its time
    "audit_unavailable",
    "shutdown",
    "bad_trigger",
    "trigger_conflict",
)


@dataclass
class Job:
    container_id: str
    trigger_t: float  # monotonic seconds at the trigger edge
    read_frame: Callable[[], Any]  # the camera: a Frame, a bare image (stamped on return), None
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
    released: bool = False  # an accept was released to the gate
    detections: List[List[List[float]]] = field(default_factory=list)
    image: Optional[np.ndarray] = None  # a reject's evidence frame, saved with its audit row
    amends: bool = False  # a later row correcting this container's earlier one
    recorded: bool = False  # its row is committed to the audit log

    def record(self, model_hash: str, config_hash: str) -> ContainerRecord:
        """Its audit row (times in ns of the monotonic clock)."""
        return ContainerRecord(
            self.container_id,
            int(self.trigger_t * 1e9),
            int(self.decided_t * 1e9),
            "reject" if self.reject else "accept",
            self.reason,
            self.fault,
            self.detections,
            model_hash,
            config_hash,
        )

    def write_failed(self, error: str, fault: str = "audit_unavailable") -> bool:
        """Its audit row could not be written: a reject stays one, the failed write named
        with it; an accept with no record becomes a reject (no record, no release). An
        amending row keeps what physically happened (a container that passed, passed).
        True when the row already had a fault of its own (`fault` is extra)."""
        if not self.reject and not self.amends:
            self.reject, self.fault = True, fault
            self.reason = f"accept not recorded ({error}): rejected"
            return False
        self.reason = f"{self.reason}; first write failed ({error})"
        if self.fault is None:
            self.fault = fault
            return False
        return True


@dataclass(eq=False)
class InFlight:
    job: Job
    deadline: float  # decisions after this are late: gate - margin
    armed: Optional[Pulse]  # reject wiring: the pulse only a recorded accept cancels
    stage: str = "capture queue"
