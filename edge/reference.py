"""Reference frames: a few images with known objects, shipped in the bundle, that the unit's
own backend must find before it decides anything.

The frames' outputs pass every health check of a blind model: an engine built wrong (an
INT8 calibration gone bad, a precision bug, a wrong input layout) returns finite, distinct,
low scores and in-range boxes, and the line would accept every container. The bundle's
maker records how many of the reference objects its own backend found; `fod check`,
`fod run` and a rollout run the same frames through the unit's backend and refuse a model
that finds fewer than `REFERENCE_SHARE` of them.
"""

from __future__ import annotations

import collections
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bundle import Bundle
from .detector import EdgeDetector
from .errors import FodError
from .fsutil import atomic_write_bytes
from .model_info import ModelInfo
from .postprocess import Detections, PostprocessConfig

REFERENCE_SCORE = 0.5  # a sure sighting: the decision's default score_threshold
REFERENCE_IOU = 0.3  # found: a detection at REFERENCE_SCORE overlaps the object this much
REFERENCE_SHARE = 0.8  # of the objects the bundle's maker found, the unit must find
# A round passes within its period plus this much (its frames wait for idle moments), or
# the line runs unchecked: no round passed for 2 periods + REFERENCE_GRACE_S raises the alarm.
REFERENCE_GRACE_S = 30.0


@dataclass(frozen=True)
class Reference:
    images: np.ndarray  # [N, H, W] grey or [N, H, W, 3] RGB uint8, the model input's size
    boxes: np.ndarray  # [M, 4] xyxy in model-input px
    image_of: np.ndarray  # [M] int64: the image each box is in


def save_reference(path: Path, ref: Reference) -> None:
    """Write `ref` as a compressed .npz (no pickles), atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, images=ref.images, boxes=ref.boxes, image_of=ref.image_of)
    atomic_write_bytes(path, buf.getvalue())


def load_reference(path: Path) -> Reference:
    """Read and check a reference .npz; FodError naming the file and the problem."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, boxes, image_of = z["images"], z["boxes"], z["image_of"]
    except (OSError, ValueError, KeyError) as e:
        raise FodError(f"{path}: not a reference frame file: {e}") from None
    n = len(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or n == 0:
        raise FodError(f"{path}: images must be [N, H, W(, 3)] uint8, got {images.shape}")
    if boxes.shape != (len(image_of), 4) or not np.isfinite(boxes).all() or not len(boxes):
        raise FodError(f"{path}: boxes must be [M, 4] finite with M >= 1, got {boxes.shape}")
    if image_of.dtype.kind not in "iu" or not ((image_of >= 0) & (image_of < n)).all():
        raise FodError(f"{path}: image_of must index the {n} images")
    return Reference(images, boxes.astype(np.float32), image_of.astype(np.int64))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [T, 4], b [P, 4] xyxy -> IoU [T, P]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [T, P, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # [T, P]
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)  # [T]
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)  # [P]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def found_in(d: Detections, truth: np.ndarray) -> int:
    """Of one image's objects `truth` [M, 4], those that a detection of any class at
    REFERENCE_SCORE or more overlaps by REFERENCE_IOU (any class: on the line a particle
    read as a fibre still rejects)."""
    sure = d.boxes[d.scores >= REFERENCE_SCORE].reshape(-1, 4)
    if not len(truth) or not len(sure):
        return 0
    return int((iou_matrix(truth, sure) >= REFERENCE_IOU).any(axis=1).sum())


def found_objects(detect: Callable[[List[np.ndarray]], List[Detections]], ref: Reference) -> int:
    """The reference objects found (`found_in`), one image a call."""
    return sum(
        found_in(detect([image])[0], ref.boxes[ref.image_of == i])
        for i, image in enumerate(ref.images)
    )


def needed(found_by_maker: int) -> int:
    """Objects the unit must find of the reference: REFERENCE_SHARE of what the bundle's
    maker found (TensorRT and ONNX Runtime differ by a few sightings), at least 1."""
    return max(1, math.floor(REFERENCE_SHARE * found_by_maker))


def reference_meta(ref: Reference, found: int, measured_with: str) -> Dict[str, Any]:
    """The manifest's `reference` entry: what the maker's backend found, at which rule."""
    return {
        "images": len(ref.images),
        "objects": len(ref.boxes),
        "found": int(found),
        "score": REFERENCE_SCORE,
        "iou": REFERENCE_IOU,
        "measured_with": measured_with,
    }


def check_reference(
    detect: Callable[[List[np.ndarray]], List[Detections]],
    ref: Reference,
    meta: Dict[str, Any],
    input_shape: Sequence[int],
    source: str,
) -> str:
    """Run the reference frames through `detect` (the unit's backend) -> a line saying what
    it found; raise FodError where it found fewer than `needed` of what the maker found,
    or where the frames are not the model's input shape [H, W(, 3)]."""
    if tuple(ref.images.shape[1:]) != tuple(input_shape):
        raise FodError(
            f"{source}: reference frames are {tuple(ref.images.shape[1:])}, the model takes "
            f"{tuple(input_shape)}"
        )
    by_maker = meta.get("found")
    if isinstance(by_maker, bool) or not isinstance(by_maker, int) or by_maker < 1:
        raise FodError(f"{source}: the manifest's reference.found must be a count >= 1")
    got, need = found_objects(detect, ref), needed(by_maker)
    line = found_line(got, ref, by_maker, str(meta.get("measured_with", "the maker")))
    if got < need:
        raise FodError(f"{source}: the model is blind to its reference frames: {line}")
    return line


def found_line(got: int, ref: Reference, by_maker: int, maker: str) -> str:
    return (
        f"found {got} of {len(ref.boxes)} reference objects "
        f"({by_maker} by {maker}, at least {needed(by_maker)} needed)"
    )


def model_frame_shape(info: ModelInfo) -> Tuple[int, ...]:
    """The frames a model takes: (H, W) grey for a grey-input graph, else (H, W, 3) RGB."""
    w, h = info.input_size
    return (h, w) if info.input_layout == "uint8_nhw" else (h, w, 3)


@dataclass(frozen=True)
class Sight:
    """What the unit's backend found of the bundle's reference frames at its check."""

    line: str  # found N of M reference objects (...)
    ref: Reference
    by_maker: int  # objects the bundle's maker found
    maker: str  # the maker's backend


def bundle_reference(
    bundle: Bundle, backend: Any, cfg: Optional[PostprocessConfig] = None
) -> Optional[Sight]:
    """The bundle's reference frames through `backend` (check_reference) -> what it found,
    or None where the bundle has none (made without `--reference`)."""
    path = bundle.file("reference")
    if path is None:
        return None
    meta = bundle.manifest.get("reference")
    if not isinstance(meta, dict):
        raise FodError(f"{path}: the bundle's manifest has no `reference` entry")
    detector = EdgeDetector(backend, backend.info, cfg)
    ref = load_reference(path)
    line = check_reference(detector.detect, ref, meta, model_frame_shape(backend.info), str(path))
    return Sight(line, ref, int(meta["found"]), str(meta.get("measured_with", "the maker")))


class SelfTest:
    """The reference frames again while the line runs: a round every `every_s` seconds,
    one image at a time, each in a moment the inference stage has nothing else to do.

    An engine can go blind after its start-up check (its weights or context corrupted in
    memory, a GPU fault, a driver reset) and still give outputs that pass every per-frame
    check: the line would accept every container until the next start. A round that finds
    fewer than `needed` of what the bundle's maker found is blind. Not thread-safe: one
    stage (inference) steps it."""

    def __init__(
        self,
        sight: Sight,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sight, self.every_s, self.clock = sight, every_s, clock
        self.need = needed(sight.by_maker)
        self.next_t = clock() + every_s  # the start-up check was the first round
        self.passed_t = clock()  # when the last round passed (the start-up check's, first)
        self.rounds: collections.Counter[str] = collections.Counter()  # passed/blind/error
        self.line = sight.line  # what the last finished round found
        self._image = self._found = 0
        self._unchecked: List[str] = []  # accepts since the last passed round: first, last
        self._unchecked_n = 0
        self._overdue_alarmed = False

    def accepted(self, container_id: str) -> None:
        """A container accepted on the model's word: unchecked until a round passes."""
        self._unchecked[1:] = [container_id]
        self._unchecked_n += 1

    def unchecked(self) -> str:
        """The containers accepted since the last passed round, for the alarm."""
        n, which = self._unchecked_n, " .. ".join(self._unchecked)
        held = f" ({which}): hold them for re-inspection" if n else ""
        return f"{n} container(s) accepted since the last passed check{held}"

    def due(self) -> bool:
        return self.clock() >= self.next_t

    def overdue(self) -> Optional[float]:
        """Seconds since a round last passed, where that is past 2 periods plus
        REFERENCE_GRACE_S (the stage never idle, or its rounds failing to run), else None.
        Read from another thread than the one stepping: a float read."""
        age = self.clock() - self.passed_t
        return age if age > 2 * self.every_s + REFERENCE_GRACE_S else None

    def overdue_alarm(self) -> Optional[str]:
        """Why to raise the alarm, the first time `overdue` (None before and after): the
        line goes on, its containers' own calls still run; an operator must look. Called
        by the supervisor alone."""
        age = None if self._overdue_alarmed else self.overdue()
        if age is None:
            return None
        self._overdue_alarmed = True
        return (
            f"no round of the reference frames has passed for {age:.0f} s "
            f"({self.rounds.get('error', 0)} ended by a model call that raised): the "
            "model's sight is unchecked"
        )

    def step(self, detect: Callable[[np.ndarray], Detections]) -> Optional[bool]:
        """`detect` (one image of the model input's size -> its detections) on the round's
        next image -> None while the round goes on; at its end True (enough found) or
        False (blind; `line` says what it found). A call that raises ends the round
        unjudged (counted `error`, the next round `every_s` later) and propagates."""
        ref, i = self.sight.ref, self._image
        try:
            d = detect(ref.images[i])
        except BaseException:
            self._end("error")
            raise
        self._found += found_in(d, ref.boxes[ref.image_of == i])
        self._image += 1
        if self._image < len(ref.images):
            return None
        self.line = found_line(self._found, ref, self.sight.by_maker, self.sight.maker)
        ok = self._found >= self.need
        self._end("passed" if ok else "blind")
        return ok

    def _end(self, result: str) -> None:
        if result == "passed":
            self.passed_t = self.clock()
            self._unchecked, self._unchecked_n = [], 0
        self.rounds[result] += 1
        self._image = self._found = 0
        self.next_t = self.clock() + self.every_s
