"""One container's frames through the model and the decision rule.

Any backend failure is a reject with its fault named, never an accept. A crash of the
rule itself is left to propagate: the stage supervisor rejects the container it held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np

from .decision import Decision
from .health import BadOutput
from .postprocess import Detections


@dataclass
class Verdict:
    reject: bool
    reason: str
    fault: Optional[str] = None  # set when the model could not be asked
    image: Optional[np.ndarray] = None  # a reject's evidence: the frame of its best detection
    detections: List[List[List[float]]] = field(default_factory=list)  # per frame [x1 y1 x2 y2 s c]
    abandoned: bool = False  # no longer awaited: not all its frames were run


ABANDONED = "rejected while inferred (its deadline, or the runtime stopping); other frames not run"


def judge(
    frames: Sequence[np.ndarray],
    detect: Callable[[List[np.ndarray]], List[Detections]],
    rule: Callable[[List[Detections]], Decision],
    awaited: Callable[[], bool] = lambda: True,
) -> Verdict:
    """Detect on each frame (one at a time: the engine's batch is 1), then decide. Once
    `awaited()` says, before a frame, that the container no longer waits for a verdict
    (rejected at its deadline meanwhile), its other frames are not run: `abandoned`."""
    dets: List[Detections] = []
    try:
        for f in frames:
            if not awaited():  # the model's time goes to a container still in time
                return Verdict(True, ABANDONED, "stall", abandoned=True)
            dets.append(detect([f])[0])
    except BadOutput as e:
        return Verdict(True, str(e), "bad_output")
    except Exception as e:  # any backend failure is a reject, never an accept
        return Verdict(True, f"backend error: {type(e).__name__}: {e}", "backend_error")
    d = rule(dets)
    v = Verdict(d.reject, d.reason)
    if d.reject:
        top = [float(x.scores.max()) if len(x) else -1.0 for x in dets]
        v.image = frames[int(np.argmax(top))]
    v.detections = [
        [[*map(float, b), float(s), float(lab)] for b, s, lab in zip(x.boxes, x.scores, x.labels)]
        for x in dets
    ]
    return v
