"""Per-container decision: detections over a container's frames -> accept or reject, and why.

The paper's rule is k of N frames with a class-wise score threshold and a minimum
size. Beyond the paper, detections are linked into tracks across the frames: after
spin-stop a particle drifts and sinks while a scratch or a mark on the glass stays
put, so a moving track's frames count more than a static one's. Pure functions: the
runtime, the simulator and the tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence

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
    """Greedy nearest-centre association across frames (closest pairs first), vectorised."""
    tracks: List[Track] = []
    for t, d in enumerate(frames):
        keep = _keep(d, names, cfg)
        boxes, scores, labels = d.boxes[keep], d.scores[keep], d.labels[keep]
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
        live = [tr for tr in tracks if t - tr.frames[-1] <= cfg.max_gap + 1]
        matched = np.full(len(centres), -1)
        if live and len(centres):
            last = np.stack([tr.centres[-1] for tr in live])  # [T, 2]
            dist = np.linalg.norm(last[:, None, :] - centres[None, :, :], axis=2)  # [T, K]
            pairs = np.argwhere(dist <= cfg.match_distance)
            order = np.argsort(dist[pairs[:, 0], pairs[:, 1]], kind="stable")
            used_t: np.ndarray = np.zeros(len(live), dtype=bool)
            for ti, ki in pairs[order]:
                if not used_t[ti] and matched[ki] < 0:
                    used_t[ti] = True
                    matched[ki] = ti
        for k in range(len(centres)):
            if matched[k] >= 0:
                tr = live[matched[k]]
                tr.frames.append(t)
                tr.centres.append(centres[k])
                tr.labels.append(int(labels[k]))
                tr.scores.append(float(scores[k]))
            else:
                tracks.append(Track([t], [centres[k]], [int(labels[k])], [float(scores[k])]))
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
