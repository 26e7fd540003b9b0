"""What flows through the runtime: a container's job, its outcome, and the fault classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

import numpy as np

from .gpio import Pulse

FAULTS = (
    "camera_drop",
    "corrupt_frame",
    "frame_health",
    "bad_output",
    "backend_error",
    "late",
    "stall",
    "thread_crash",
    "queue_overflow",
    "gpio_error",
    "audit_unavailable",
    "shutdown",
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


@dataclass(eq=False)
class InFlight:
    job: Job
    deadline: float  # decisions after this are late: gate - margin
    armed: Optional[Pulse]  # reject wiring: the pulse only a recorded accept cancels
    stage: str = "capture queue"
