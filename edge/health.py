"""Frame health and model-output sanity: what must never be read as "clean".

A frame of the wrong geometry (truncated, wrong channels), a uniform frame (lamp off,
lens cap, saturated sensor) or a frame identical to the one before (a frozen driver
repeating its buffer) shows nothing of the container: deciding "no particle" on it
would be an accept without evidence. Likewise a non-finite or out-of-range model
output. Each check is a pure function on numpy arrays, cheap enough per frame
(statistics on a 1-in-4 subsample).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import FodError


class BadOutput(FodError):
    """The backend returned non-finite or out-of-range values."""


@dataclass(frozen=True)
class FrameHealthConfig:
    min_std: float = 2.0  # grey levels: below this the frame is uniform (nothing imaged)
    min_mean: float = 8.0  # grey levels: below this the lamp is off
    max_saturated: float = 0.9  # fraction of pixels at >= 250: a blinded sensor


def frame_fault(
    frame: np.ndarray,
    expected: Tuple[int, ...],
    previous: Optional[np.ndarray] = None,
    cfg: FrameHealthConfig = FrameHealthConfig(),
) -> Optional[Tuple[str, str]]:
    """(fault, reason) for a frame that cannot count as evidence, else None.

    frame (ndarray[H, W] or [H, W, 3] uint8); `expected` the configured (H, W) or (H, W, 3).
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        return "corrupt_frame", f"not a uint8 image ({type(frame).__name__})"
    if frame.shape != tuple(expected):
        return "corrupt_frame", f"shape {frame.shape}, expected {tuple(expected)}"
    sub: np.ndarray = frame[::4, ::4].astype(np.float32)  # [H/4, W/4(, 3)]
    mean, std = float(sub.mean()), float(sub.std())
    if mean < cfg.min_mean:
        return "frame_health", f"black frame (mean {mean:.1f}): lamp off?"
    if float((sub >= 250).mean()) > cfg.max_saturated:
        return "frame_health", f"saturated frame (mean {mean:.1f})"
    if std < cfg.min_std:
        return "frame_health", f"uniform frame (std {std:.2f})"
    if previous is not None and previous.shape == frame.shape and np.array_equal(previous, frame):
        return "frame_health", "frozen: identical to the previous frame"
    return None


def check_outputs(boxes: np.ndarray, scores: np.ndarray) -> None:
    """Raise BadOutput unless boxes [N, A, 4] are finite and scores [N, A, C] lie in [0, 1]."""
    if not np.isfinite(boxes).all():
        raise BadOutput("non-finite box coordinates from the backend")
    if not np.isfinite(scores).all():
        raise BadOutput("non-finite scores from the backend")
    if scores.size and (float(scores.min()) < 0.0 or float(scores.max()) > 1.0):
        raise BadOutput(f"scores outside [0, 1] ({scores.min():.3g}..{scores.max():.3g})")
