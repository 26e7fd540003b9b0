"""Per-container decision: detections over a container's frames -> accept or reject, and why.

The paper's rule is k of N frames with a class-wise score threshold and a minimum
size. Beyond the paper, detections are linked into tracks across the frames: after
spin-stop a particle drifts and sinks while a scratch or a mark on the glass stays
put, so a moving track's frames count more than a static one's. Pure functions: the
runtime, the simulator and the tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from .postprocess import Detections


@dataclass(frozen=True)
class DecisionConfig:
    min_evidence: float = 3.0  # k: weighted frames a track needs to reject the container
    score_threshold: float = 0.5  # default per-class score threshold
    class_thresholds: Dict[str, float] = field(default_factory=dict)  # overrides by class name
    min_size: float = 2.0  # px: a detection's longer side must reach this
    match_distance: float = 40.0  # px: largest centre jump between frames for one track
    max_gap: int = 2  # frames a track may be missed and still continue
    moving_distance: float = 6.0  # px: start-to-end travel that makes a track "moving"
    moving_weight: float = 1.5  # a moving track's frames count this much ...
    static_weight: float = 0.5  # ... a static mark's this much (scratch on the glass)


@dataclass(eq=False)  # identity: tracks are matched by object, not by their arrays
class Track:
    frames: List[int]  # frame indices where it was seen
    centres: List[np.ndarray]  # [2] per sighting
    labels: List[int]
    scores: List[float]

    @property
    def travel(self) -> float:
        return float(np.linalg.norm(self.centres[-1] - self.centres[0]))

    def evidence(self, cfg: DecisionConfig) -> float:
        w = cfg.moving_weight if self.travel >= cfg.moving_distance else cfg.static_weight
        return w * len(self.frames)

    @property
    def label(self) -> int:
        return int(np.bincount(self.labels).argmax())


@dataclass(frozen=True)
class Decision:
    reject: bool
    reason: str  # one line for the audit trail
    tracks: int  # tracks found
    evidence: float  # of the strongest track


def _keep(d: Detections, names: Sequence[str], cfg: DecisionConfig) -> np.ndarray:
    thr = np.array(
        [cfg.class_thresholds.get(n, cfg.score_threshold) for n in names], dtype=np.float32
    )
    wh = d.boxes[:, 2:] - d.boxes[:, :2]  # [K, 2]
    return (d.scores >= thr[d.labels]) & (wh.max(axis=1) >= cfg.min_size)


def link_tracks(
    frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig
) -> List[Track]:
    """Greedy nearest-centre association across frames (strongest detections first)."""
    tracks: List[Track] = []
    for t, d in enumerate(frames):
        keep = _keep(d, names, cfg)
        boxes, scores, labels = d.boxes[keep], d.scores[keep], d.labels[keep]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
        free = [tr for tr in tracks if t - tr.frames[-1] <= cfg.max_gap + 1]
        for i in np.argsort(-scores):
            best: Optional[Track] = None
            best_d = cfg.match_distance
            for tr in free:
                dist = float(np.linalg.norm(tr.centres[-1] - centres[i]))
                if dist <= best_d:
                    best, best_d = tr, dist
            if best is None:
                tracks.append(Track([t], [centres[i]], [int(labels[i])], [float(scores[i])]))
            else:
                free.remove(best)
                best.frames.append(t)
                best.centres.append(centres[i])
                best.labels.append(int(labels[i]))
                best.scores.append(float(scores[i]))
    return tracks


def decide(frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig) -> Decision:
    """Reject when any track's weighted frame count reaches `min_evidence`."""
    tracks = link_tracks(frames, names, cfg)
    if not tracks:
        return Decision(
            False, f"clean: no detection above threshold in {len(frames)} frames", 0, 0.0
        )
    best = max(tracks, key=lambda tr: tr.evidence(cfg))
    ev = best.evidence(cfg)
    motion = "moving" if best.travel >= cfg.moving_distance else "static"
    what = (
        f"{names[best.label]} track seen in {len(best.frames)}/{len(frames)} frames, "
        f"{motion} ({best.travel:.0f} px), evidence {ev:.1f} of {cfg.min_evidence:.1f}"
    )
    if ev >= cfg.min_evidence:
        return Decision(True, "particle: " + what, len(tracks), ev)
    return Decision(False, "below evidence: " + what, len(tracks), ev)
