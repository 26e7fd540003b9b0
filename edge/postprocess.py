"""Detections from the dense ONNX outputs, in numpy + OpenCV (the device has no torch).

Same rule as training/postprocess.py, which the tests hold it to: per pyramid level
the `nms_pre` best (anchor, class) pairs above the score threshold, then class-wise
NMS over all levels (OpenCV's NMSBoxesBatched), then the best `max_per_image`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class PostprocessConfig:
    nms_pre: int = 1000  # candidates kept per level before NMS
    score_threshold: float = 0.05
    nms_iou: float = 0.6  # class-wise
    max_per_image: int = 100


@dataclass
class Detections:
    """One image's detections."""

    boxes: np.ndarray  # [K, 4] float32 xyxy
    scores: np.ndarray  # [K] float32
    labels: np.ndarray  # [K] int64, 0-based class index

    def __len__(self) -> int:
        return len(self.scores)


def frame_detections(frames: Sequence[Sequence[Sequence[float]]]) -> List[Detections]:
    """The audit's per-frame rows ([[x0, y0, x1, y1, score, label], ...] per frame) back
    into Detections."""
    out = []
    for rows in frames:
        a = np.asarray(rows, dtype=np.float64).reshape(-1, 6)  # [K, 6]
        out.append(
            Detections(
                a[:, :4].astype(np.float32), a[:, 4].astype(np.float32), a[:, 5].astype(np.int64)
            )
        )
    return out


def label_beyond(
    frames: Sequence[Sequence[Sequence[float]]], names: Sequence[str]
) -> Optional[int]:
    """The highest class index of the audit's per-frame rows when any lies outside
    `names`, else None: such rows were recorded by a model of other classes."""
    labels = [int(x[5]) for rows in frames for x in rows]
    if labels and not 0 <= min(labels) <= max(labels) < len(names):
        return max(labels)
    return None


def select_per_image(
    boxes: np.ndarray, scores: np.ndarray, counts: Sequence[int], cfg: PostprocessConfig
) -> Detections:
    """boxes [A, 4] xyxy and scores [A, C] of one image -> its detections."""
    num_classes = scores.shape[1]
    kb, ks, kl = [], [], []
    start = 0
    for n in counts:
        s = scores[start : start + n].reshape(-1)  # [n*C]
        keep = np.flatnonzero(s > cfg.score_threshold)
        if keep.size > cfg.nms_pre:
            keep = keep[np.argpartition(-s[keep], cfg.nms_pre - 1)[: cfg.nms_pre]]
        kb.append(boxes[keep // num_classes + start])
        ks.append(s[keep])
        kl.append(keep % num_classes)
        start += n
    b = np.concatenate(kb).astype(np.float32).reshape(-1, 4)
    s = np.concatenate(ks).astype(np.float32)
    lab = np.concatenate(kl).astype(np.int64)
    if s.size == 0:
        return Detections(b, s, lab)
    return _nms(Detections(b, s, lab), cfg)


def merge_detections(parts: Sequence[Detections], cfg: PostprocessConfig) -> Detections:
    """Detections of overlapping tiles of one frame (already in frame pixels) -> the
    frame's: class-wise NMS across tiles (an object in an overlap is seen twice), then the
    best `max_per_image`."""
    d = Detections(
        np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
        np.concatenate([p.scores for p in parts]).astype(np.float32),
        np.concatenate([p.labels for p in parts]).astype(np.int64),
    )
    return _nms(d, cfg) if len(d) else d


def _nms(d: Detections, cfg: PostprocessConfig) -> Detections:
    """Class-wise NMS, best first, at most `max_per_image`."""
    b, s, lab = d.boxes, d.scores, d.labels
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).astype(np.float64)
    idx = cv2.dnn.NMSBoxesBatched(
        xywh.tolist(), s.tolist(), lab.astype(np.int32).tolist(), 0.0, cfg.nms_iou
    )
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    idx = idx[np.argsort(-s[idx], kind="stable")][: cfg.max_per_image]
    return Detections(b[idx], s[idx], lab[idx])
