"""Frame health and model-output sanity: what must never be read as "clean".

A frame of the wrong geometry (truncated, wrong channels), a uniform frame (lamp off,
lens cap, saturated sensor) or a frame identical to the one before (a frozen driver
repeating its buffer) shows nothing of the container: deciding "no particle" on it
would be an accept without evidence. Likewise a non-finite or out-of-range model
output. Each check is a pure function on numpy arrays, cheap enough per frame
(statistics on a 1-in-64 subsample from every 16th row; a full compare only
when that subsample repeats).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import FodError
from .model_info import ModelInfo

INVERTED_PX = 0.5  # px of slack before an inverted or off-input box is a broken output


class BadOutput(FodError):
    """The backend returned values no healthy model gives (non-finite, out of range, dead)."""


@dataclass(frozen=True)
class FrameHealthConfig:
    min_std: float = 2.0  # grey levels: below this the frame is uniform (nothing imaged)
    min_mean: float = 8.0  # grey levels: below this the lamp is off
    max_saturated: float = 0.9  # fraction of pixels at >= 250: a blinded sensor


def _sample(frame: np.ndarray) -> np.ndarray:
    """[H/16, W/4] of one channel, contiguous: 1/64 of the pixels from 1/16 of the rows (the
    rows set the memory traffic; a lamp or a sensor fails on all three channels alike)."""
    sub = frame[::16, ::4]
    return np.ascontiguousarray(sub[..., 1] if sub.ndim == 3 else sub)


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
        what = frame.dtype if isinstance(frame, np.ndarray) else type(frame).__name__
        return "corrupt_frame", f"not a uint8 image ({what})"
    if frame.shape != tuple(expected):
        return "corrupt_frame", f"shape {frame.shape}, expected {tuple(expected)}"
    sub = _sample(frame)
    mean = float(sub.mean())
    if mean < cfg.min_mean:
        return "frame_health", f"black frame (mean {mean:.1f}): lamp off?"
    if np.count_nonzero(sub >= 250) > cfg.max_saturated * sub.size:
        return "frame_health", f"saturated frame (mean {mean:.1f})"
    std = float(sub.std())
    if std < cfg.min_std:
        return "frame_health", f"uniform frame (std {std:.2f})"
    if (
        previous is not None
        and previous.shape == frame.shape
        and np.array_equal(_sample(previous), sub)  # cheap first look
        and np.array_equal(previous, frame)
    ):
        return "frame_health", "frozen: identical to the previous frame"
    return None


def check_shapes(boxes: np.ndarray, scores: np.ndarray, images: int, info: ModelInfo) -> None:
    """Raise BadOutput unless boxes are [images, A, 4] and scores [images, A, C] for the
    model's A anchor points (`info.level_counts`) and C classes: a backend that hands back
    fewer anchors (a wrong or broken engine) would otherwise read as a clean frame."""
    want_a, want_c = int(sum(info.level_counts)), len(info.class_names)
    if boxes.shape != (images, want_a, 4) or scores.shape != (images, want_a, want_c):
        raise BadOutput(
            f"backend outputs boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)}, "
            f"expected ({images}, {want_a}, 4) and ({images}, {want_a}, {want_c})"
        )


def check_backend_outputs(
    boxes: np.ndarray, scores: np.ndarray, images: int, info: ModelInfo
) -> None:
    """Every check of one backend call's outputs for `images` images of the model `info`:
    check_shapes, then check_outputs against its input size (the line and `fod bench`
    check alike)."""
    check_shapes(boxes, scores, images, info)
    check_outputs(boxes, scores, info.input_size)


def check_outputs(
    boxes: np.ndarray, scores: np.ndarray, input_wh: Optional[Tuple[int, int]] = None
) -> None:
    """Raise BadOutput unless boxes [N, A, 4] are finite, xyxy (no side below
    -`INVERTED_PX`), inside the model input `input_wh` (W, H) when given (give or take
    `INVERTED_PX`) and not all one value per image, and scores [N, A, C] lie in [0, 1] and
    are not all one value per image.

    A trained model's boxes are anchor points plus non-negative distances, clipped to the
    input in the exported graph, so they span it, stay in it and never invert, and its
    scores differ from anchor to anchor: a buffer the backend never wrote (all zeros) or a
    dead head would otherwise read as a clean frame, an inverted box would fall under
    `min_size` and be dropped, and boxes scaled or shifted off the input would leave
    tracks that never link or sit nowhere on the frame. A few reductions per array (a
    per-frame cost on the line): NaN propagates through min and max."""
    n = len(boxes)
    if boxes.size:
        flat = boxes.reshape(n, -1)  # [N, A*4]
        lo, hi = flat.min(axis=1), flat.max(axis=1)  # [N]
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise BadOutput("non-finite box coordinates from the backend")
        if (lo == hi).any():
            raise BadOutput(f"every box coordinate is {float(lo[lo == hi][0]):.3g}: a dead output")
        # Width and height apart: 1-D strided differences are 5x faster than one [N, A, 2].
        side = float(
            min((boxes[..., 2] - boxes[..., 0]).min(), (boxes[..., 3] - boxes[..., 1]).min())
        )
        if side < -INVERTED_PX:
            raise BadOutput(f"inverted boxes from the backend (a side of {side:.3g} px)")
        if input_wh is not None:
            w, h = input_wh  # x1 >= x0 and y1 >= y0 (above), so x1 and y1 bound the maxima
            far = max(
                -float(lo.min()), float(boxes[..., 2].max()) - w, float(boxes[..., 3].max()) - h
            )
            if far > INVERTED_PX:
                raise BadOutput(
                    f"boxes {far:.3g} px outside the {w}x{h} model input (values "
                    f"{float(lo.min()):.3g}..{float(hi.max()):.3g})"
                )
    if scores.size:
        flat = scores.reshape(len(scores), -1)  # [N, A*C]
        lo, hi = flat.min(axis=1), flat.max(axis=1)  # [N]
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise BadOutput("non-finite scores from the backend")
        if lo.min() < 0.0 or hi.max() > 1.0:
            raise BadOutput(f"scores outside [0, 1] ({lo.min():.3g}..{hi.max():.3g})")
        if flat.shape[1] > 1 and (lo == hi).any():
            raise BadOutput(f"every score is {float(lo[lo == hi][0]):.3g}: a dead output")


class StaleOutputs:
    """Remembers one backend call's last image and outputs, to catch a backend that did not
    run: one that hands back, bit for bit, what it returned for the image before while the
    image differs. Backends reuse their output buffers (TensorRT's pinned host memory, an
    I/O binding), so a copy that never happened reads as the previous frame's detections:
    a particle that moves looks static, a defective container looks like the clean one
    before it. A healthy model's outputs change with any change of its input (sensor noise
    alone changes every frame), and the same image may give the same outputs (`fod bench`)."""

    def __init__(self) -> None:
        self._last: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None

    def check(self, images: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> None:
        """images [N, ...] as the backend took them, boxes [N, A, 4], scores [N, A, C] (shapes
        checked) -> raise BadOutput where image i's boxes and scores equal those of the image
        before it (i - 1, or the previous call's last) while the two images differ."""
        before = self._last
        # Copies: the caller's arrays may be the backend's reused buffers.
        self._last = (images[-1].copy(), boxes[-1].copy(), scores[-1].copy())
        for i in range(len(images)):
            prev = before if i == 0 else (images[i - 1], boxes[i - 1], scores[i - 1])
            if (
                prev is not None
                and np.array_equal(prev[2], scores[i])  # scores first: they differ soonest
                and np.array_equal(prev[1], boxes[i])
                and not np.array_equal(prev[0], images[i])
            ):
                raise BadOutput(
                    "stale output: the backend returned, bit for bit, its outputs for the "
                    "image before, for a different image (it did not run)"
                )
