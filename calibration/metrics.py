"""COCO box metrics, computed by pycocotools (never by hand), shared by every evaluation path.

PyTorch, ONNX FP32 and INT8 evaluations all hand their detections here, so their
numbers are comparable to the last digit.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SMALL_AREA = 32**2  # COCOeval's "small" area range is [0, 32^2] px^2


@dataclass(frozen=True)
class Metrics:
    """COCO's box metrics, None where COCO leaves one undefined: AP_small and AR_small on a
    set without small boxes, all five on a set without boxes. Printed as 0 they would read
    as a model that misses what was never there to find."""

    ap50: Optional[float]  # AP at IoU 0.5
    ap: Optional[float]  # AP averaged over IoU 0.5:0.95
    ap_small: Optional[float]  # AP of boxes of at most 32x32 px (COCO's "small")
    ar: Optional[float]  # AR with 100 detections per image
    ar_small: Optional[float]  # AR of small boxes

    def to_dict(self) -> Dict[str, Optional[float]]:
        return asdict(self)


def show(value: Optional[float], scale: float = 1.0, spec: str = ".4f") -> str:
    """A metric for a table or a log line: `n/a` where it is undefined."""
    return "n/a" if value is None else format(scale * value, spec)


def load_gt(annotations: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(annotations))


def coco_metrics(
    gt: COCO, detections: List[Dict[str, Any]], img_ids: Optional[Sequence[int]] = None
) -> Tuple[Metrics, Optional[COCOeval]]:
    """Metrics of `detections` ([{image_id, category_id, bbox xywh, score}]) against `gt`,
    on the images `img_ids` only when given (COCOeval's own restriction: a part of a set).

    No detection at all scores 0 wherever a metric is defined (pycocotools cannot load an
    empty result); where COCO marks one undefined (-1) it is None.
    """
    if not detections:
        return _no_detections(gt, img_ids), None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [float(v) if v >= 0 else None for v in ev.stats]
    # stats: 0 AP, 1 AP50, 2 AP75, 3 AP_s, 4 AP_m, 5 AP_l, 6 AR1, 7 AR10, 8 AR100, 9 AR_s, ...
    return Metrics(ap50=s[1], ap=s[0], ap_small=s[3], ar=s[8], ar_small=s[9]), ev


def _no_detections(gt: COCO, img_ids: Optional[Sequence[int]]) -> Metrics:
    """What COCOeval would give a model that detects nothing: 0 where the images hold boxes
    it counts (crowd regions it ignores), undefined where they hold none."""
    ids = gt.getImgIds() if img_ids is None else list(img_ids)
    boxes = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=ids)) if not a.get("iscrowd", 0)]
    every = 0.0 if boxes else None
    small = 0.0 if any(a["area"] <= SMALL_AREA for a in boxes) else None
    return Metrics(ap50=every, ap=every, ap_small=small, ar=every, ar_small=small)
