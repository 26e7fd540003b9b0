"""A container's frames from the camera: only frames of this container, each one healthy.

Frames carry the time they were grabbed. A frame from before the container's trigger
(a driver's buffered frame) is skipped and counted; a frame taken after the next
container's trigger is not this container's (capture fell behind); a missing, slow,
mis-sized, black, saturated, uniform or repeated frame ends the capture with its fault.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from .health import frame_fault
from .sources import STAMP_SLACK_S, Frame


@dataclass
class Capture:
    frames: List[np.ndarray] = field(default_factory=list)
    fault: Optional[str] = None
    reason: str = ""
    stale: int = 0  # frames from before the trigger, skipped


def capture_frames(
    read: Callable[[], Any],  # the camera: a Frame, a bare image (stamped on return), or None
    trigger_t: float,
    next_trigger_t: float,  # inf when no later container has been triggered yet
    count: int,
    shape: Tuple[int, ...],  # the configured frame geometry
    previous: Optional[np.ndarray],  # the last frame seen, of the container before
    timeout_ms: float,
    clock: Callable[[], float] = time.monotonic,
) -> Capture:
    out = Capture()
    prev = previous
    for i in range(count):
        try:
            img, out.fault, out.reason = _one(
                read, i, count, trigger_t, next_trigger_t, shape, prev, timeout_ms, clock, out
            )
        except Exception as e:  # a camera driver fails in its own ways
            out.fault, out.reason = (
                "camera_drop",
                f"frame {i}: camera error: {type(e).__name__}: {e}",
            )
        if out.fault:
            break
        out.frames.append(img)
        prev = img
    return out


def _one(
    read: Callable[[], Any],
    i: int,
    count: int,
    trigger_t: float,
    next_trigger_t: float,
    shape: Tuple[int, ...],
    prev: Optional[np.ndarray],
    timeout_ms: float,
    clock: Callable[[], float],
    out: Capture,
) -> Tuple[Any, Optional[str], str]:
    """One usable frame taken after the trigger: (image, None, "") or (None, fault, reason)."""
    for _ in range(4 + 2 * count):  # stale buffered frames are skipped, a bounded number
        t = clock()
        raw = read()
        if raw is None:
            return None, "camera_drop", f"frame {i} of {count} missing"
        f = raw if isinstance(raw, Frame) else Frame(raw, clock())
        now = clock()
        if (now - t) * 1000 > timeout_ms:
            return None, "camera_drop", f"frame {i} later than {timeout_ms} ms"
        # A time that is no time of this clock (NaN, or after now: another clock) cannot say
        # whether the frame shows this container or one before it.
        if not math.isfinite(f.t) or f.t > now + STAMP_SLACK_S:
            why = f"frame {i}: its time {f.t!r} is not of the monotonic clock"
            return None, "corrupt_frame", why
        if f.t < trigger_t:  # buffered before this container's trigger: not its image
            out.stale += 1
            continue
        if f.t >= next_trigger_t:  # the camera already shows the next container
            return None, "late", f"frame {i} taken after the next container's trigger"
        bad = frame_fault(f.image, shape, prev)
        if bad is not None:
            return None, bad[0], f"frame {i}: {bad[1]}"
        return f.image, None, ""
    return None, "camera_drop", f"frame {i}: only frames from before the trigger"
