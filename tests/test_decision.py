"""The container decision on hand-made detections: moving particles vs static marks."""

from __future__ import annotations

import numpy as np

from edge.decision import DecisionConfig, decide, link_tracks
from edge.postprocess import Detections

NAMES = ["fiber", "particle", "glass_flake"]


def _frames(positions, label=1, score=0.8, size=6.0, n=12):
    """One detection per frame at positions[t] (None: nothing that frame)."""
    out = []
    for t in range(n):
        p = positions[t] if t < len(positions) else None
        if p is None:
            out.append(
                Detections(
                    np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
                )
            )
            continue
        x, y = p
        out.append(
            Detections(
                np.array([[x, y, x + size, y + size]], np.float32),
                np.array([score], np.float32),
                np.array([label]),
            )
        )
    return out


def test_moving_particle_rejects_quickly() -> None:
    cfg = DecisionConfig()
    once = _frames([(100, 100) if t == 3 else None for t in range(12)])
    d = decide(once, NAMES, cfg)
    assert not d.reject and d.evidence == 0.5  # one sighting has no travel: static weight
    # Seen twice while sinking 8 px/frame: moving, 2 x 1.5 = 3.0 >= 3 -> reject.
    twice = _frames([(100, 100 + 8 * t) if t in (3, 4) else None for t in range(12)])
    d = decide(twice, NAMES, cfg)
    assert d.reject and "particle track seen in 2/12 frames, moving (8 px)" in d.reason


def test_static_mark_needs_many_frames() -> None:
    cfg = DecisionConfig()
    static = [(300, 200)] * 5 + [None] * 7
    d = decide(_frames(static), NAMES, cfg)
    assert not d.reject and "static" in d.reason and d.evidence == 2.5
    d = decide(_frames([(300, 200)] * 12), NAMES, cfg)
    assert d.reject  # a mark in every frame is still a reject: doubt means reject


def test_thresholds_and_min_size() -> None:
    moving = [(100, 100 + 5 * t) for t in range(12)]
    assert not decide(_frames(moving, score=0.4), NAMES, DecisionConfig()).reject
    assert decide(
        _frames(moving, score=0.4), NAMES, DecisionConfig(class_thresholds={"particle": 0.3})
    ).reject
    assert not decide(_frames(moving, size=1.5), NAMES, DecisionConfig()).reject


def test_tracks_split_by_distance_and_gap() -> None:
    cfg = DecisionConfig(match_distance=20, max_gap=1)
    jumpy = [(100, 100), (100, 160), (100, 220)]
    assert len(link_tracks(_frames(jumpy), NAMES, cfg)) == 3
    gappy = [(100, 100), None, None, None, (100, 104)]
    assert len(link_tracks(_frames(gappy), NAMES, cfg)) == 2
    assert len(link_tracks(_frames([(100, 100), None, (100, 104)]), NAMES, cfg)) == 1


def test_no_detections_is_clean() -> None:
    d = decide(_frames([None] * 12), NAMES, DecisionConfig())
    assert not d.reject and d.tracks == 0 and d.reason.startswith("clean")


def test_many_tracks_in_one_frame() -> None:
    # Several simultaneous detections: association must not compare tracks by value.
    frames = []
    for t in range(4):
        boxes = np.array(
            [[10 + 100 * k, 10 + 3 * t, 16 + 100 * k, 16 + 3 * t] for k in range(5)], np.float32
        )
        frames.append(Detections(boxes, np.full(5, 0.9, np.float32), np.ones(5, np.int64)))
    tracks = link_tracks(frames, NAMES, DecisionConfig())
    assert len(tracks) == 5 and all(len(tr.frames) == 4 for tr in tracks)
