"""What a healthy model returns where it sees nothing: boxes that span the input and
scores that are low but differ from anchor to anchor. Scripted backends start from it:
all-zero outputs are a dead backend's, which edge.health.check_outputs rejects."""

from __future__ import annotations

from typing import Tuple

import numpy as np


def quiet_outputs(n: int, anchors: int, classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """-> boxes [n, anchors, 4] xyxy (1-px boxes along a row), scores [n, anchors, classes]
    in (0, 0.01), all below any score threshold."""
    x = np.arange(anchors, dtype=np.float32)[None, :, None]  # [1, A, 1]
    boxes = np.concatenate([x, 0 * x, x + 1, 0 * x + 1], axis=2)  # [1, A, 4]
    k = np.arange(1, anchors * classes + 1, dtype=np.float32).reshape(1, anchors, classes)
    scores = 0.01 * k / k.size  # [1, A, C]
    return np.repeat(boxes, n, axis=0), np.repeat(scores, n, axis=0)
