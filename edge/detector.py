"""Frames in, detections in frame pixels out: letterbox -> backend -> postprocess -> unletterbox,
whole or tile by tile (a camera larger than the model input keeps its small particles'
pixels instead of halving them), optionally also mirrored left-right (a second look at
each frame, merged by NMS)."""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .backends import Backend
from .health import StaleOutputs, check_backend_outputs
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
        mirror: bool = False,
    ) -> None:
        self.backend, self.info = backend, info
        self.cfg = cfg if cfg is not None else PostprocessConfig()
        self.tiles, self.overlap = tiles, overlap
        self.mirror = mirror
        self.stale = StaleOutputs()

    def detect(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        """uint8 frames, RGB [H, W, 3] or grey [H, W], of any size -> detections in each
        frame's pixels. With tiles, each frame is cut into overlapping tiles, each tile
        goes through the model on its own (an engine's batch may be 1) and the tiles'
        detections are merged by NMS; a bad output of any tile fails the frame. With
        `mirror`, each frame is also run mirrored left-right (as a whole or tiled alike),
        and both views' detections are merged by NMS: twice the model calls; a bad output
        of either view fails the frame."""
        if self.mirror:
            return detect_mirrored(frames, self._detect_view, self.cfg)
        return self._detect_view(frames)

    def _detect_view(self, frames: Sequence[np.ndarray]) -> List[Detections]:
        if self.tiles != (1, 1):
            return [self._detect_tiled(f) for f in frames]
        return self.detect_whole(frames)

    def detect_whole(self, images: Sequence[np.ndarray]) -> List[Detections]:
        """Each image letterboxed whole into the model, one call for all of them ->
        detections in each image's pixels."""
        boxed, lbs = zip(*(letterbox(f, self.info.input_size) for f in images))
        batch = np.stack(boxed)
        boxes, scores = self.backend.infer(batch)
        # Missing anchors, NaN, a dead, off-input or stale output: never a "clean" frame.
        check_backend_outputs(boxes, scores, len(boxed), self.info)
        self.stale.check(batch, boxes, scores)
        out = []
        for b, s, lb in zip(boxes, scores, lbs):
            d = select_per_image(b, s, self.info.level_counts, self.cfg)
            out.append(Detections(boxes_to_source(d.boxes, lb), d.scores, d.labels))
        return out

    def _detect_tiled(self, frame: np.ndarray) -> Detections:
        # One call per tile: an engine's batch may be 1.
        return detect_tiles(
            frame,
            self.tiles,
            self.overlap,
            self.info.input_size,
            lambda tile: self.detect_whole([np.ascontiguousarray(tile)])[0],
            self.cfg,
        )


def detect_mirrored(
    frames: Sequence[np.ndarray],
    detect_view: Callable[[Sequence[np.ndarray]], List[Detections]],
    cfg: PostprocessConfig,
) -> List[Detections]:
    """Each frame through `detect_view` as it is and mirrored left-right -> per frame, both
    views' detections in the frame's pixels, merged by class-wise NMS."""
    plain = detect_view(frames)
    flipped = detect_view([np.ascontiguousarray(f[:, ::-1]) for f in frames])
    return [
        merge_detections([d, mirrored(m, f.shape[1])], cfg)
        for f, d, m in zip(frames, plain, flipped)
    ]


def mirrored(d: Detections, width: int) -> Detections:
    """Detections of a frame mirrored left-right -> the same objects in the frame's pixels."""
    b = d.boxes  # [N, 4] xyxy
    boxes = np.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], axis=1)
    return Detections(boxes.astype(np.float32).reshape(-1, 4), d.scores, d.labels)


def detect_tiles(
    frame: np.ndarray,
    grid: Tuple[int, int],
    overlap: int,
    input_size: Tuple[int, int],
    detect_one: Callable[[np.ndarray], Detections],
    cfg: PostprocessConfig,
) -> Detections:
    """A frame cut into `grid` tiles of the model input's shape, overlapping by at least
    `overlap` px; `detect_one` gets each tile (a view into the frame) and returns its
    detections in tile pixels -> the frame's detections, merged by NMS across tiles."""
    h, w = frame.shape[:2]
    parts = []
    for x0, y0, x1, y1 in tile_windows((w, h), grid, overlap, input_size[0] / input_size[1]):
        d = detect_one(frame[y0:y1, x0:x1])
        offset = np.array([x0, y0, x0, y0], np.float32)
        parts.append(Detections(d.boxes + offset, d.scores, d.labels))
    return merge_detections(parts, cfg)
