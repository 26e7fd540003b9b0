"""Frames in, detections in frame pixels out: letterbox -> backend -> postprocess -> unletterbox."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .backends import Backend
from .health import check_outputs
from .model_info import ModelInfo
from .postprocess import Detections, PostprocessConfig, select_per_image
from .preprocess import boxes_to_source, letterbox


class EdgeDetector:
    def __init__(
        self, backend: Backend, info: ModelInfo, cfg: Optional[PostprocessConfig] = None
    ) -> None:
        self.backend, self.info = backend, info
        self.cfg = cfg if cfg is not None else PostprocessConfig()

    def detect(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """uint8 frames, RGB [H, W, 3] or grey [H, W], of any size -> detections in each
        frame's pixels."""
        boxed, lbs = zip(*(letterbox(f, self.info.input_size) for f in frames))
        boxes, scores = self.backend.infer(np.stack(boxed))
        check_outputs(boxes, scores)  # NaN or out-of-range scores must not read as "clean"
        out = []
        for b, s, lb in zip(boxes, scores, lbs):
            d = select_per_image(b, s, self.info.level_counts, self.cfg)
            out.append(Detections(boxes_to_source(d.boxes, lb), d.scores, d.labels))
        return out
