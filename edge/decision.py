"""Per-container decision: detections over a container's frames -> accept or reject, and why.

The paper's rule is k of N frames with a class-wise score threshold and a minimum
size. Beyond the paper, detections are linked into tracks across the frames and each
track is judged by its path: after spin-stop a particle sinks or swirls, an air bubble
rises steadily, and a scratch, a print or a glare on the glass stays put. A detector
fooled by a new look mistakes bubbles and marks for particles; their paths still give
them away. Only a moving track's frames count by default. Pure functions: the runtime,
the simulator and the tests share them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .postprocess import Detections


@dataclass(frozen=True)
class DecisionConfig:
    min_evidence: float = 3.0  # k: weighted frames a track needs to reject the container
    score_threshold: float = 0.5  # default per-class score threshold: a track starts here
    track_threshold: float = 0.3  # a live track continues from this score (capped per class)
    unsure_weight: float = 0.4  # a track seen only from track_threshold counts this share (0: off)
    class_thresholds: Dict[str, float] = field(default_factory=dict)  # overrides by class name
    # Distances are px of the camera's frame, or of a frame `reference_height` px high,
    # scaled to the camera's (see in_frame).
    reference_height: float = 0.0
    min_size: float = 2.0  # px: a detection's longer side must reach this
    match_distance: float = 40.0  # px: largest centre jump between frames for one track
    max_gap: int = 2  # frames a track may be missed and still continue
    moving_distance: float = 6.0  # px: extent of the path below which a track is static
    moving_weight: float = 1.5  # a moving track's frames count this much ...
    static_weight: float = 0.0  # ... a static mark's this much (scratch, print, glare)
    rising_distance: float = 6.0  # px: net climb that, with steady steps up, is a bubble
    rising_steps: float = 0.75  # share of frame-to-frame steps that must go up
    rising_weight: float = 0.0  # a rising track's frames (an air bubble) count this much
    # A wandering box is a mark's (see classify_path): net travel under this share of the
    # path's length (0: off) with steps that turn more than `wander_roughness` x their size.
    wander_straightness: float = 0.0
    wander_roughness: float = 1.0
    # A jump - a step over `jump_distance` px (0: off) and `jump_ratio` x the track's median
    # speed - is where linking joined two objects; see classify_track.
    jump_distance: float = 12.0
    jump_ratio: float = 3.0

    def in_frame(self, height: int) -> DecisionConfig:
        """This config for frames `height` px high: with a `reference_height`, its
        distances scaled from a frame that high (a camera of twice the resolution and the
        same field of view sees a particle move twice the px); 0 (the default) takes them
        as the frame's px. Off by default because it holds only where motion scales with
        the frame: on `fod synth` frames rendered at 1280x800, whose particles move as
        many px as at 640x384, scaled distances read slow particles as static marks."""
        if not height > 0:
            raise ValueError(f"frame height must be positive, got {height!r}")
        if self.reference_height == 0 or height == self.reference_height:
            return self
        scale = height / self.reference_height
        return dataclasses.replace(self, **{k: getattr(self, k) * scale for k in DISTANCES})


DISTANCES = ("min_size", "match_distance", "moving_distance", "rising_distance", "jump_distance")
MOVING, RISING, STATIC = "moving particle", "rising: bubble", "static: mark"


def classify_path(centres: np.ndarray, cfg: DecisionConfig) -> str:
    """MOVING, RISING or STATIC for a track's centres (ndarray [T, 2], x right, y down).

    Static: the whole path fits in `moving_distance` (jitter of a mark's box included),
    or its later half sits less than half that from its earlier half (the halves'
    median positions): a path that travels `moving_distance` moves about half of it
    between its halves, while a mark's box, the larger the mark the more, jitters about
    one place and can stretch the path's extent without going anywhere.
    With `wander_straightness` on, also static: a path that wanders - its net travel under
    that share of its length, its steps changing by more than `wander_roughness` times
    their mean size from one to the next - as the box of a resting bubble or a mark does
    when its outline or label changes; a particle's path is smooth even where its swirl
    turns back. Off by default: a slow particle under a jittery detector wanders too.
    Rising: it climbs at least `rising_distance` with most steps going up, as a bubble
    does - most of all its steps, or most of those longer than half `rising_distance` (a
    bubble that reached the surface rests there; its jitter then says nothing). A
    particle's swirl goes sideways and it sinks, so a path that only climbs is not a
    particle's. Anything else moves like a particle.
    """
    extent = float(np.linalg.norm(centres.max(axis=0) - centres.min(axis=0)))
    half = max(1, len(centres) // 2)
    shift = float(np.linalg.norm(np.median(centres[-half:], 0) - np.median(centres[:half], 0)))
    if extent < cfg.moving_distance or shift < cfg.moving_distance / 2 or wanders(centres, cfg):
        return STATIC
    dy = np.diff(centres[:, 1])  # [T-1]
    if float(centres[0, 1] - centres[-1, 1]) < cfg.rising_distance:
        return MOVING
    moved = np.abs(dy) >= cfg.rising_distance / 2
    up = [float(np.mean(dy < 0)), float(np.mean(dy[moved] < 0)) if moved.any() else 0.0]
    return RISING if max(up) >= cfg.rising_steps else MOVING


def wanders(centres: np.ndarray, cfg: DecisionConfig) -> bool:
    """Whether a path (ndarray [T, 2]) wanders: it travels less than `wander_straightness`
    of its length and its steps turn more than `wander_roughness` of their mean size."""
    if cfg.wander_straightness <= 0 or len(centres) < 3:
        return False
    steps = np.diff(centres, axis=0)  # [T-1, 2]
    size = np.linalg.norm(steps, axis=1)  # [T-1]
    turn = np.linalg.norm(np.diff(steps, axis=0), axis=1)  # [T-2]
    travel = float(np.linalg.norm(centres[-1] - centres[0]))
    return bool(
        travel < cfg.wander_straightness * float(size.sum())
        and float(turn.mean()) > cfg.wander_roughness * float(size.mean())
    )


def jumps(centres: np.ndarray, frames: np.ndarray, cfg: DecisionConfig) -> np.ndarray:
    """Indices i of the sightings (centres [T, 2] in frames [T]) reached by a jump from
    sighting i-1: a step longer than `jump_distance` and faster than `jump_ratio` times the
    track's median speed (px per frame, so a step across missed frames is not one)."""
    if cfg.jump_distance <= 0 or len(centres) < 3:
        return np.zeros(0, dtype=int)
    step = np.linalg.norm(np.diff(centres, axis=0), axis=1)  # [T-1]
    speed = step / np.diff(frames)  # [T-1]
    jump = (step > cfg.jump_distance) & (speed > cfg.jump_ratio * float(np.median(speed)))
    return np.flatnonzero(jump) + 1


def classify_track(centres: np.ndarray, frames: np.ndarray, cfg: DecisionConfig) -> str:
    """classify_path for a track's centres [T, 2] seen in frames [T], judged by its pieces
    when it jumps. A particle's speed changes smoothly; a sudden jump is linking passing
    from one object to another within `match_distance`: a bubble rising to one beside it,
    a bubble to a mark. Such a track reads as moving over its whole length although no
    piece of it moves like a particle, so a moving track with jumps is read by its pieces
    between them: moving if any piece moves (all its frames count, as without the test),
    else what its longest piece is (a one-sighting piece shows no path: static)."""
    kind = classify_path(centres, cfg)
    cuts = jumps(centres, frames, cfg)
    if kind != MOVING or not len(cuts):
        return kind
    kinds = [(len(p), classify_path(p, cfg)) for p in np.split(centres, cuts)]
    if any(k == MOVING for _, k in kinds):
        return MOVING
    return max(kinds, key=lambda nk: nk[0])[1]  # the first of the longest pieces


@dataclass(eq=False)  # identity: tracks are matched by object, not by their arrays
class Track:
    frames: List[int]  # frame indices where it was seen
    centres: List[np.ndarray]  # [2] per sighting
    labels: List[int]
    scores: List[float]
    sure: int = 1  # sightings at or above their class's threshold

    @property
    def travel(self) -> float:
        """Extent of the path, px."""
        c = np.stack(self.centres)
        return float(np.linalg.norm(c.max(axis=0) - c.min(axis=0)))

    def path(self, cfg: DecisionConfig) -> str:
        return classify_track(np.stack(self.centres), np.array(self.frames), cfg)

    def evidence(self, cfg: DecisionConfig, kind: str = "") -> float:
        """Weighted frame count; `kind`: its path when the caller has classified it. A track
        never seen sure counts `unsure_weight` of it. Rounded: weights like 0.4 x 1.5 x 5
        must reach a `min_evidence` of 3.0, not fall 4e-16 short of it."""
        w = {MOVING: cfg.moving_weight, RISING: cfg.rising_weight, STATIC: cfg.static_weight}
        share = 1.0 if self.sure else cfg.unsure_weight
        return round(w[kind or self.path(cfg)] * len(self.frames) * share, 9)

    @property
    def label(self) -> int:
        return int(np.bincount(self.labels).argmax())


@dataclass(frozen=True)
class Decision:
    reject: bool
    reason: str  # one line for the audit trail
    tracks: int  # tracks found
    evidence: float  # of the strongest track


def _thresholds(names: Sequence[str], cfg: DecisionConfig) -> Tuple[np.ndarray, np.ndarray]:
    """Per class: the score that starts a track [C], and the one that continues it [C]."""
    start = np.array(
        [cfg.class_thresholds.get(n, cfg.score_threshold) for n in names], dtype=np.float32
    )
    return start, np.minimum(start, np.float32(cfg.track_threshold))


def _associate(
    last: np.ndarray, free: np.ndarray, centres: np.ndarray, cfg: DecisionConfig
) -> np.ndarray:
    """Greedy, closest pairs first: for each of centres [K, 2] the index of a free track
    (its last centre in last [T, 2]) or -1; marks the tracks it takes in `free` [T]."""
    matched = np.full(len(centres), -1)
    if not len(last) or not len(centres):
        return matched
    dist = np.linalg.norm(last[:, None, :] - centres[None, :, :], axis=2)  # [T, K]
    pairs = np.argwhere((dist <= cfg.match_distance) & free[:, None])
    order = np.argsort(dist[pairs[:, 0], pairs[:, 1]], kind="stable")
    for ti, ki in pairs[order]:
        if free[ti] and matched[ki] < 0:
            free[ti] = False
            matched[ki] = ti
    return matched


def link_tracks(
    frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig
) -> List[Track]:
    """Nearest-centre association across frames. Detections at a class's threshold
    start tracks and are matched first; below it, from `track_threshold`, they continue a
    live track that nothing stronger took (as ByteTrack associates its low-score boxes):
    an unsure sighting of a particle already found counts in full. With `unsure_weight`
    on they also start tracks, which count that share of their frames until a sure
    sighting joins them: a particle the model never scores high must be seen moving in
    more frames."""
    start, cont = _thresholds(names, cfg)
    tracks: List[Track] = []
    for t, d in enumerate(frames):
        wh = d.boxes[:, 2:] - d.boxes[:, :2]  # [K, 2]
        sized = wh.max(axis=1) >= cfg.min_size
        strong = sized & (d.scores >= start[d.labels])
        weak = sized & ~strong & (d.scores >= cont[d.labels])
        live = [tr for tr in tracks if t - tr.frames[-1] <= cfg.max_gap + 1]
        last = np.stack([tr.centres[-1] for tr in live]) if live else np.zeros((0, 2))  # [T, 2]
        free: np.ndarray = np.ones(len(live), dtype=bool)
        for keep, sure in ((strong, True), (weak, False)):
            boxes, scores, labels = d.boxes[keep], d.scores[keep], d.labels[keep]
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [K, 2]
            matched = _associate(last, free, centres, cfg)
            for k in range(len(centres)):
                if matched[k] >= 0:
                    tr = live[matched[k]]
                    tr.frames.append(t)
                    tr.centres.append(centres[k])
                    tr.labels.append(int(labels[k]))
                    tr.scores.append(float(scores[k]))
                    tr.sure += sure
                elif sure or cfg.unsure_weight > 0:
                    tracks.append(
                        Track([t], [centres[k]], [int(labels[k])], [float(scores[k])], int(sure))
                    )
    return tracks


@dataclass(frozen=True)
class Judged:
    """A track as the decision judged it."""

    track: Track
    kind: str  # MOVING, RISING or STATIC
    evidence: float


def decide(frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig) -> Decision:
    """Reject when any track's weighted frame count reaches `min_evidence`; the reason
    names the strongest track's path and what was discounted. Unsure sightings
    (`track_threshold`, `unsure_weight`) can only add rejects: they can also bend a path
    (a particle's track continued by a bubble's blob may read as rising) or, starting
    tracks of their own, take a sure sighting into another track, so the linkings are
    judged in turn - sure sightings alone, then unsure ones continuing tracks, then unsure
    tracks - and the first reject stands."""
    return explain(frames, names, cfg)[0]


def explain(
    frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig
) -> Tuple[Decision, List[Judged]]:
    """decide, and the tracks of the linking that decided, strongest first (for review)."""
    start, cont = _thresholds(names, cfg)
    linkings = [dataclasses.replace(cfg, track_threshold=1.0)]  # sure sightings alone
    if (cont < start).any():  # some class takes unsure sightings
        linkings.append(dataclasses.replace(cfg, unsure_weight=0.0))
        if cfg.unsure_weight > 0:
            linkings.append(cfg)
    for linking in linkings:
        d, judged = _judge(frames, names, linking)
        if d.reject:
            break
    return d, judged


def _judge(
    frames: Sequence[Detections], names: Sequence[str], cfg: DecisionConfig
) -> Tuple[Decision, List[Judged]]:
    tracks = link_tracks(frames, names, cfg)
    if not tracks:
        return Decision(
            False, f"clean: no detection above threshold in {len(frames)} frames", 0, 0.0
        ), []
    judged = [Judged(tr, k, tr.evidence(cfg, k)) for tr in tracks for k in [tr.path(cfg)]]
    # The strongest track; among equals (say, all discounted) the longest-seen one.
    judged.sort(key=lambda j: (j.evidence, len(j.track.frames)), reverse=True)
    ev, kind, best = judged[0].evidence, judged[0].kind, judged[0].track
    unsure = "" if best.sure else ", unsure"
    what = (
        f"{names[best.label]} track, {kind} ({best.travel:.0f} px){unsure}, "
        f"seen in {len(best.frames)}/{len(frames)} frames, "
        f"evidence {ev:.1f} of {cfg.min_evidence:.1f}"
    )
    others = Counter(j.kind for j in judged[1:] if j.kind != MOVING)
    if others:
        what += "; also " + ", ".join(f"{n} {k}" for k, n in sorted(others.items()))
    if ev >= cfg.min_evidence:
        return Decision(True, "particle: " + what, len(tracks), ev), judged
    return Decision(False, "below evidence: " + what, len(tracks), ev), judged
