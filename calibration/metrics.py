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


@dataclass(frozen=True)
class Metrics:
    ap50: float  # AP at IoU 0.5
    ap: float  # AP averaged over IoU 0.5:0.95
    ap_small: float  # AP of boxes < 32x32 px
    ar: float  # AR with 100 detections per image
    ar_small: float  # AR of small boxes

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def load_gt(annotations: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return COCO(str(annotations))


def coco_metrics(
    gt: COCO, detections: List[Dict[str, Any]], img_ids: Optional[Sequence[int]] = None
) -> Tuple[Metrics, Optional[COCOeval]]:
    """Metrics of `detections` ([{image_id, category_id, bbox xywh, score}]) against `gt`,
    on the images `img_ids` only when given (COCOeval's own restriction: a part of a set).

    No detection at all scores 0 everywhere (pycocotools cannot load an empty result).
    A metric that COCO marks undefined (-1, e.g. no small boxes in the set) is reported as 0.
    """
    if not detections:
        return Metrics(0.0, 0.0, 0.0, 0.0, 0.0), None
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        if img_ids is not None:
            ev.params.imgIds = sorted(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [max(float(v), 0.0) for v in ev.stats]
    # stats: 0 AP, 1 AP50, 2 AP75, 3 AP_s, 4 AP_m, 5 AP_l, 6 AR1, 7 AR10, 8 AR100, 9 AR_s, ...
    return Metrics(ap50=s[1], ap=s[0], ap_small=s[3], ar=s[8], ar_small=s[9]), ev
