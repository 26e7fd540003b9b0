"""Frames in, detections in frame pixels out: letterbox -> backend -> postprocess -> unletterbox,
whole or tile by tile (a camera larger than the model input keeps its small particles'
pixels instead of halving them)."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from .backends import Backend
from .health import check_outputs
from .model_info import ModelInfo
from .postprocess import Detections, PostprocessConfig, merge_detections, select_per_image
from .preprocess import boxes_to_source, letterbox, tile_windows


class EdgeDetector:
    def __init__(
        self,
        backend: Backend,
        info: ModelInfo,
        cfg: Optional[PostprocessConfig] = None,
        tiles: Tuple[int, int] = (1, 1),
        overlap: int = 32,
    ) -> None:
        self.backend, self.info = backend, info
        self.cfg = cfg if cfg is not None else PostprocessConfig()
        self.tiles, self.overlap = tiles, overlap

    def detect(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """uint8 frames, RGB [H, W, 3] or grey [H, W], of any size -> detections in each
        frame's pixels. With tiles, each frame is cut into overlapping tiles, each tile
        goes through the model on its own (an engine's batch may be 1) and the tiles'
        detections are merged by NMS; a bad output of any tile fails the frame."""
        if self.tiles != (1, 1):
            return [self._detect_tiled(f) for f in frames]
        return self._detect_whole(frames)

    def _detect_whole(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Each image letterboxed whole into the model, one call for all of them ->
        detections in each image's pixels."""
        boxed, lbs = zip(*(letterbox(f, self.info.input_size) for f in images))
        boxes, scores = self.backend.infer(np.stack(boxed))
        check_outputs(boxes, scores)  # NaN or out-of-range scores must not read as "clean"
        out = []
        for b, s, lb in zip(boxes, scores, lbs):
            d = select_per_image(b, s, self.info.level_counts, self.cfg)
            out.append(Detections(boxes_to_source(d.boxes, lb), d.scores, d.labels))
        return out

    def _detect_tiled(self, frame: np.ndarray) -> Detections:
        h, w = frame.shape[:2]
        parts = []
        aspect = self.info.input_size[0] / self.info.input_size[1]
        for x0, y0, x1, y1 in tile_windows((w, h), self.tiles, self.overlap, aspect):
            # One call per tile: an engine's batch may be 1.
            d = self._detect_whole([np.ascontiguousarray(frame[y0:y1, x0:x1])])[0]
            offset = np.array([x0, y0, x0, y0], np.float32)
            parts.append(Detections(d.boxes + offset, d.scores, d.labels))
        return merge_detections(parts, self.cfg)
