"""Reference frames: a few images with known objects, shipped in the bundle, that the unit's
own backend must find before it decides anything.

The frames' outputs pass every health check of a blind model: an engine built wrong (an
INT8 calibration gone bad, a precision bug, a wrong input layout) returns finite, distinct,
low scores and in-range boxes, and the line would accept every container. The bundle's
maker records how many of the reference objects its own backend found; `fod check`,
`fod run` and a rollout run the same frames through the unit's backend and refuse a model
that finds fewer than `REFERENCE_SHARE` of them, or where the maker found enough of a class
to judge it alone, fewer than `CLASS_SHARE` of that class: an engine blind to one class
(a per-channel quantisation scale gone wrong dims one class's scores) would otherwise pass
on the others' objects and let that class's particles through.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

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
# Per class, found as that class: a class's output gone blind finds about none of its own.
# Looser than the total: a handful of objects magnifies the few sightings TensorRT and ONNX
# Runtime differ by.
CLASS_SHARE = 0.5  # of a class's objects the maker found as that class, the unit must find
CLASS_MIN = 2  # a class the maker found fewer of is judged only in the total
FOUND, OWN_CLASS = 1, 2  # how a reference object was seen (`seen_in`); 0: missed
PICK_PER_CLASS = 4  # `fod bundle make` picks frames until the maker found this many a class
PICK_SCAN = 200  # ... looking at most at this many images of the set


@dataclass(frozen=True)
class Reference:
    images: np.ndarray  # [N, H, W] grey or [N, H, W, 3] RGB uint8, the model input's size
    boxes: np.ndarray  # [M, 4] xyxy in model-input px
    image_of: np.ndarray  # [M] int64: the image each box is in
    labels: Optional[np.ndarray] = None  # [M] int64 class of each object; None: made before


def save_reference(path: Path, ref: Reference) -> None:
    """Write `ref` as a compressed .npz (no pickles), atomically."""
    buf = io.BytesIO()
    if ref.labels is None:
        np.savez_compressed(buf, images=ref.images, boxes=ref.boxes, image_of=ref.image_of)
    else:
        np.savez_compressed(
            buf, images=ref.images, boxes=ref.boxes, image_of=ref.image_of, labels=ref.labels
        )
    atomic_write_bytes(path, buf.getvalue())


def load_reference(path: Path) -> Reference:
    """Read and check a reference .npz; FodError naming the file and the problem."""
    try:
        with np.load(path, allow_pickle=False) as z:
            images, boxes, image_of = z["images"], z["boxes"], z["image_of"]
            labels = z["labels"] if "labels" in z.files else None
    except (OSError, ValueError, KeyError) as e:
        raise FodError(f"{path}: not a reference frame file: {e}") from None
    n = len(images)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or n == 0:
        raise FodError(f"{path}: images must be [N, H, W(, 3)] uint8, got {images.shape}")
    if boxes.shape != (len(image_of), 4) or not np.isfinite(boxes).all() or not len(boxes):
        raise FodError(f"{path}: boxes must be [M, 4] finite with M >= 1, got {boxes.shape}")
    if image_of.dtype.kind not in "iu" or not ((image_of >= 0) & (image_of < n)).all():
        raise FodError(f"{path}: image_of must index the {n} images")
    if labels is not None and (
        labels.shape != image_of.shape or labels.dtype.kind not in "iu" or (labels < 0).any()
    ):
        raise FodError(f"{path}: labels must be [M] class indices >= 0, got {labels.shape}")
    return Reference(
        images,
        boxes.astype(np.float32),
        image_of.astype(np.int64),
        None if labels is None else labels.astype(np.int64),
    )


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a [T, 4], b [P, 4] xyxy -> IoU [T, P]."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # [T, P, 2]
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # [T, P]
    area_a = (a[:, 2:] - a[:, :2]).prod(axis=1)  # [T]
    area_b = (b[:, 2:] - b[:, :2]).prod(axis=1)  # [P]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def seen_in(d: Detections, truth: np.ndarray, labels: Optional[np.ndarray] = None) -> np.ndarray:
    """Of one image's objects `truth` [M, 4] (classes `labels` [M], where known), how each
    was seen -> [M] int8: 0 missed; 1 found, by a detection of any class at REFERENCE_SCORE
    or more overlapping it by REFERENCE_IOU (any class: on the line a particle read as a
    fibre still rejects); 2 found by one of its own class."""
    sure = d.scores >= REFERENCE_SCORE
    boxes = d.boxes[sure].reshape(-1, 4)
    seen: np.ndarray = np.zeros(len(truth), np.int8)
    if not len(truth) or not len(boxes):
        return seen
    hit = iou_matrix(truth, boxes) >= REFERENCE_IOU  # [M, P]
    seen[hit.any(axis=1)] = FOUND
    if labels is not None:
        seen[(hit & (labels[:, None] == d.labels[sure][None, :])).any(axis=1)] = OWN_CLASS
    return seen


def sightings(detect: Callable[[List[np.ndarray]], List[Detections]], ref: Reference) -> np.ndarray:
    """How each reference object was seen ([M] int8, `seen_in`), one image a call."""
    seen: np.ndarray = np.zeros(len(ref.boxes), np.int8)
    for i, image in enumerate(ref.images):
        see_image(seen, detect([image])[0], ref, i)
    return seen


def see_image(seen: np.ndarray, d: Detections, ref: Reference, i: int) -> None:
    """Mark in `seen` ([M] int8 of `ref`'s objects) how those of image `i` were seen in
    its detections `d` (`seen_in`)."""
    mine = ref.image_of == i
    labels = None if ref.labels is None else ref.labels[mine]
    seen[mine] = seen_in(d, ref.boxes[mine], labels)


def needed(found_by_maker: int) -> int:
    """Objects the unit must find of the reference: REFERENCE_SHARE of what the bundle's
    maker found (TensorRT and ONNX Runtime differ by a few sightings), at least 1."""
    return max(1, math.floor(REFERENCE_SHARE * found_by_maker))


def class_needed(found_by_maker: int) -> int:
    """Objects of one class the unit must find as that class: CLASS_SHARE of what the maker
    found so, at least 1; 0 (judged only in the total) where the maker found under CLASS_MIN."""
    return 0 if found_by_maker < CLASS_MIN else max(1, math.floor(CLASS_SHARE * found_by_maker))


def pick_frames(found: Iterable[np.ndarray], n: int, count: int, n_classes: int) -> List[int]:
    """Which of `n` candidate images become the `count` reference frames, in the set's
    order: first each image that brings a class the maker's model has found fewer than
    PICK_PER_CLASS objects of so far, then the earliest others. `found` yields, image by
    image, the classes [K] of the objects the model found as their class; it is read (the model
    run) only until every class has its share, `count` are picked or PICK_SCAN were read."""
    have: np.ndarray = np.zeros(n_classes, np.int64)
    chosen: List[int] = []
    for i, labels in zip(range(min(n, PICK_SCAN)), found):
        if (have[labels] < PICK_PER_CLASS).any():
            chosen.append(i)
            have += np.bincount(labels, minlength=n_classes)
        if len(chosen) == count or (have >= PICK_PER_CLASS).all():
            break
    rest = [i for i in range(n) if i not in chosen]
    return sorted(chosen + rest[: count - len(chosen)])


@dataclass(frozen=True)
class Rule:
    """What the unit must find of the reference frames: from what the bundle's maker found
    (the manifest's `reference` entry), in all and, where recorded, per class."""

    by_maker: int  # objects the bundle's maker found
    maker: str  # the maker's backend
    by_class: Tuple[int, ...] = ()  # per class, the maker found as that class; (): not recorded
    names: Tuple[str, ...] = ()  # the model's class names, for the lines

    @property
    def need(self) -> int:
        return needed(self.by_maker)

    def judge(self, seen: np.ndarray, ref: Reference) -> Tuple[bool, str]:
        """How `ref`'s objects were seen ([M] int8, `seen_in`) -> (enough found in all and
        as each class: the rule passes; a line saying what)."""
        got = int((seen >= FOUND).sum())
        line = (
            f"found {got} of {len(ref.boxes)} reference objects "
            f"({self.by_maker} by {self.maker}, at least {self.need} needed)"
        )
        ok = got >= self.need
        if not self.by_class or ref.labels is None:
            return ok, line
        per = np.bincount(ref.labels[seen == OWN_CLASS], minlength=len(self.by_class))
        needs = [class_needed(n) for n in self.by_class]
        short = [self.names[c] for c, need in enumerate(needs) if per[c] < need]
        parts = [
            f"{name} {per[c]}/{self.by_class[c]}" + (f" (>= {needs[c]})" if needs[c] else "")
            for c, name in enumerate(self.names)
        ]
        line += "; as their own class, found/the maker's: " + ", ".join(parts)
        if short:
            line += f"; blind to {', '.join(short)}"
        return ok and not short, line


def reference_rule(meta: Dict[str, Any], ref: Reference, names: Sequence[str], source: str) -> Rule:
    """The manifest's `reference` entry, checked against the reference file and the
    model's classes -> the Rule; FodError naming `source` where they do not fit."""
    by_maker = meta.get("found")
    if isinstance(by_maker, bool) or not isinstance(by_maker, int) or by_maker < 1:
        raise FodError(f"{source}: the manifest's reference.found must be a count >= 1")
    maker = str(meta.get("measured_with", "the maker"))
    by_class = meta.get("found_by_class")
    if by_class is None:  # bundles made before per-class counts: judged in the total
        return Rule(by_maker, maker)
    if (
        not isinstance(by_class, list)
        or len(by_class) != len(names)
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in by_class)
        or sum(by_class) > by_maker
    ):
        raise FodError(
            f"{source}: the manifest's reference.found_by_class must be {len(names)} counts "
            f"(the model's classes), {by_maker} (reference.found) at most, got {by_class!r}"
        )
    if ref.labels is None or (ref.labels >= len(names)).any():
        raise FodError(
            f"{source}: the reference objects need labels of the model's {len(names)} classes"
        )
    return Rule(by_maker, maker, tuple(by_class), tuple(names))


def reference_meta(
    ref: Reference, seen: np.ndarray, measured_with: str, n_classes: int
) -> Dict[str, Any]:
    """The manifest's `reference` entry: what the maker's backend found (`seen` [M] int8,
    `seen_in`), in all and, where the objects are labelled, per class as that class."""
    meta: Dict[str, Any] = {
        "images": len(ref.images),
        "objects": len(ref.boxes),
        "found": int((seen >= FOUND).sum()),
    }
    if ref.labels is not None:
        own = ref.labels[seen == OWN_CLASS]
        meta["found_by_class"] = np.bincount(own, minlength=n_classes).tolist()
    meta.update(score=REFERENCE_SCORE, iou=REFERENCE_IOU, measured_with=measured_with)
    return meta


def check_reference(
    detect: Callable[[List[np.ndarray]], List[Detections]],
    ref: Reference,
    rule: Rule,
    input_shape: Sequence[int],
    source: str,
) -> str:
    """Run the reference frames through `detect` (the unit's backend) -> a line saying what
    it found; raise FodError where it found fewer than `rule` needs, or where the frames
    are not the model's input shape [H, W(, 3)]."""
    if tuple(ref.images.shape[1:]) != tuple(input_shape):
        raise FodError(
            f"{source}: reference frames are {tuple(ref.images.shape[1:])}, the model takes "
            f"{tuple(input_shape)}"
        )
    ok, line = rule.judge(sightings(detect, ref), ref)
    if not ok:
        raise FodError(f"{source}: the model is blind to its reference frames: {line}")
    return line


def model_frame_shape(info: ModelInfo) -> Tuple[int, ...]:
    """The frames a model takes: (H, W) grey for a grey-input graph, else (H, W, 3) RGB."""
    w, h = info.input_size
    return (h, w) if info.input_layout == "uint8_nhw" else (h, w, 3)


@dataclass(frozen=True)
class Sight:
    """What the unit's backend found of the bundle's reference frames at its check."""

    line: str  # found N of M reference objects (...)
    ref: Reference
    rule: Rule


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
    rule = reference_rule(meta, ref, backend.info.class_names, str(path))
    line = check_reference(detector.detect, ref, rule, model_frame_shape(backend.info), str(path))
    return Sight(line, ref, rule)
