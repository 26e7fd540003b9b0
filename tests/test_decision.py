"""The container decision on hand-made detections: moving particles vs static marks."""

from __future__ import annotations

import numpy as np
import pytest

from edge.decision import (
    MOVING,
    RISING,
    STATIC,
    DecisionConfig,
    classify_path,
    decide,
    link_tracks,
)
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
    assert not d.reject and d.evidence == 0.0  # one sighting shows no path: nothing proven
    # Seen twice while sinking 8 px/frame: moving, 2 x 1.5 = 3.0 >= 3 -> reject.
    twice = _frames([(100, 100 + 8 * t) if t in (3, 4) else None for t in range(12)])
    d = decide(twice, NAMES, cfg)
    assert d.reject
    assert "particle track, moving particle (8 px), seen in 2/12 frames" in d.reason


def _path(kind: str, rng: np.random.Generator, n: int = 12) -> np.ndarray:
    """Hand-made centre paths [n, 2] after spin-stop, with 1 px detector jitter."""
    t = np.arange(n, dtype=np.float64)
    x0, y0 = rng.uniform(200, 400), rng.uniform(150, 250)
    if kind == "rising":  # a bubble: steady climb, a little sideways drift
        xy = np.stack([x0 + 0.4 * t, y0 - rng.uniform(2, 9) * t], 1)
    elif kind == "sinking":
        xy = np.stack([x0 + 0.3 * t, y0 + rng.uniform(0.8, 5) * t], 1)
    elif kind == "swirling":  # the liquid's residual rotation: sideways, decaying, sinking
        a = rng.uniform(8, 25)
        xy = np.stack([x0 + a * np.sin(0.5 * t) * np.exp(-t / 8), y0 + 0.8 * t], 1)
    elif kind == "static":
        xy = np.tile([x0, y0], (n, 1))
    else:  # jittering in place: a mark whose box wobbles by the detector's noise
        xy = np.tile([x0, y0], (n, 1)) + rng.uniform(-1.2, 1.2, (n, 2))
    return xy + rng.uniform(-0.5, 0.5, xy.shape)


@pytest.mark.parametrize(
    "kind, want",
    [
        ("rising", RISING),
        ("sinking", MOVING),
        ("swirling", MOVING),
        ("static", STATIC),
        ("jittering", STATIC),
    ],
)
def test_path_classifier(kind: str, want: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert classify_path(_path(kind, rng), DecisionConfig()) == want


def test_swirl_that_climbs_a_little_is_still_a_particle() -> None:
    # Up one frame, sideways and down the next: a climb without steady steps up.
    xy = np.array([[100, 100], [110, 96], [118, 99], [121, 93], [119, 98], [112, 95]], float)
    assert classify_path(xy, DecisionConfig()) == MOVING
    # Up and down in long steps, 14 px up in all: 3 of its 5 long steps go up.
    xy = np.array([[100, 100], [104, 92], [108, 97], [112, 88], [116, 94], [120, 86]], float)
    assert classify_path(xy, DecisionConfig()) == MOVING


def test_unsure_tracks_never_undo_a_reject() -> None:
    # A particle seen sure once at (100, 100), then unsure while it sinks 8 px a frame. An
    # unsure blob 10 px below it in the first frame starts a track of its own, and being
    # closer takes the particle's unsure sightings: that track (4 unsure frames, 2.4) and
    # the particle's (1 frame) both fall short. Linked without unsure tracks, the particle's
    # track holds all 4 frames (6.0): that reject must stand.
    frames = [
        Detections(
            np.array([[97, 97, 103, 103], [97, 107, 103, 113]], np.float32),
            np.array([0.9, 0.35], np.float32),
            np.ones(2, np.int64),
        ),
        *_two([None] * 3, [(97, 109 + 8 * t) for t in range(3)], n=3),
    ]
    cfg = DecisionConfig()
    particle, blob = link_tracks(frames, NAMES, cfg)
    assert len(particle.frames) == 1 and blob.frames == [0, 1, 2, 3] and blob.sure == 0
    off = decide(frames, NAMES, DecisionConfig(unsure_weight=0))
    assert off.reject and "seen in 4/4 frames" in off.reason
    d = decide(frames, NAMES, cfg)
    assert d.reject and d.reason == off.reason


def test_bubble_resting_at_the_surface_is_still_a_bubble() -> None:
    # Climbs 8 px a frame, then sits under the meniscus with 1 px jitter: only 4 of its
    # 7 steps go up, all 3 of those longer than half rising_distance do.
    y = [200, 192, 184, 176, 176, 177, 176, 177]
    xy = np.stack([np.full(8, 300.0), np.array(y, float)], 1)
    assert classify_path(xy, DecisionConfig()) == RISING


def test_rising_bubble_alone_never_rejects() -> None:
    cfg = DecisionConfig()
    rng = np.random.default_rng(1)
    for _ in range(20):
        path = [tuple(p) for p in _path("rising", rng)]
        d = decide(_frames(path, label=2, score=0.99), NAMES, cfg)
        assert not d.reject and "rising: bubble" in d.reason and d.evidence == 0.0


def test_static_mark_counts_only_with_its_weight() -> None:
    d = decide(_frames([(300, 200)] * 12), NAMES, DecisionConfig())
    assert not d.reject and "static: mark" in d.reason and d.evidence == 0.0
    # A site that wants marks on the glass rejected gives them weight.
    d = decide(_frames([(300, 200)] * 12), NAMES, DecisionConfig(static_weight=0.5))
    assert d.reject and d.evidence == 6.0
    d = decide(_frames([(300, 200)] * 5 + [None] * 7), NAMES, DecisionConfig(static_weight=0.5))
    assert not d.reject and d.evidence == 2.5


def test_particle_beside_bubble_and_mark_rejects_and_names_them() -> None:
    rng = np.random.default_rng(2)
    moving, rising = _path("sinking", rng), _path("rising", rng)
    frames = []
    for t in range(12):
        boxes = [[*p, p[0] + 6, p[1] + 6] for p in (moving[t] + [0, 300], rising[t], (600.0, 50.0))]
        frames.append(
            Detections(
                np.array(boxes, np.float32),
                np.full(3, 0.9, np.float32),
                np.array([0, 2, 1]),
            )
        )
    d = decide(frames, NAMES, DecisionConfig())
    assert d.reject and d.reason.startswith("particle: fiber track, moving particle")
    assert "also 1 rising: bubble, 1 static: mark" in d.reason


def test_thresholds_and_min_size() -> None:
    moving = [(100, 100 + 5 * t) for t in range(12)]
    assert not decide(_frames(moving, score=0.25), NAMES, DecisionConfig()).reject
    assert decide(
        _frames(moving, score=0.25), NAMES, DecisionConfig(class_thresholds={"particle": 0.2})
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


def test_reason_names_the_longest_track_among_discounted_ones() -> None:
    frames = []
    for t in range(8):
        once = [[50.0, 50.0, 56.0, 56.0]] if t == 0 else []  # made first: a tie goes to it
        boxes = [*once, [300.0, 200.0, 306.0, 206.0]]
        frames.append(
            Detections(
                np.array(boxes, np.float32),
                np.full(len(boxes), 0.9, np.float32),
                np.array([0] * len(once) + [2]),
            )
        )
    d = decide(frames, NAMES, DecisionConfig())
    assert not d.reject
    assert "glass_flake track, static: mark (0 px), seen in 8/8 frames" in d.reason


def _two(strong, weak, n=8):
    """Per frame: a detection at strong[t] (score 0.9) and/or at weak[t] (score 0.35)."""
    out = []
    for t in range(n):
        rows = [(p, s) for p, s in ((strong[t], 0.9), (weak[t], 0.35)) if p is not None]
        out.append(
            Detections(
                np.array([[x, y, x + 6, y + 6] for (x, y), _ in rows], np.float32).reshape(-1, 4),
                np.array([s for _, s in rows], np.float32),
                np.ones(len(rows), np.int64),
            )
        )
    return out


def test_track_threshold_continues_tracks_but_starts_none() -> None:
    sink = [(100, 100 + 8 * t) for t in range(8)]
    # Seen once at 0.9, then unsure (0.35) while it sinks on.
    frames = _two([sink[0]] + [None] * 7, [None, *sink[1:]])
    assert not decide(frames, NAMES, DecisionConfig(track_threshold=0.5)).reject  # off
    d = decide(frames, NAMES, DecisionConfig())  # the default, 0.3
    assert d.reject and "moving particle (56 px), seen in 8/8 frames" in d.reason
    # With unsure_weight off, unsure sightings alone start nothing, however long they move.
    alone = _two([None] * 8, sink)
    assert link_tracks(alone, NAMES, DecisionConfig(unsure_weight=0)) == []
    # A class threshold below track_threshold is the floor for that class.
    cfg = DecisionConfig(unsure_weight=0, class_thresholds={"particle": 0.2})
    assert decide(alone, NAMES, cfg).reject


def test_a_track_seen_only_unsure_needs_more_frames() -> None:
    cfg = DecisionConfig()  # unsure_weight 0.4: 1.5 x 0.4 a frame, 5 frames reach 3.0
    sink = [(100, 100 + 8 * t) for t in range(8)]
    four = decide(_two([None] * 8, sink[:4] + [None] * 4), NAMES, cfg)
    assert not four.reject and four.evidence == pytest.approx(2.4)
    assert "moving particle (24 px), unsure, seen in 4/8 frames" in four.reason
    five = decide(_two([None] * 8, sink[:5] + [None] * 3), NAMES, cfg)
    assert five.reject and five.evidence == 3.0  # not 4e-16 short of it
    off = decide(_two([None] * 8, sink), NAMES, DecisionConfig(unsure_weight=0))
    assert not off.reject and off.reason.startswith("clean")
    # An unsure bubble counts nothing however often it is seen.
    climb = [(100, 200 - 8 * t) for t in range(8)]
    assert not decide(_two([None] * 8, climb), NAMES, cfg).reject
    # A sure sighting joining an unsure track makes all of it count: 3 frames x 1.5.
    d = decide(_two([None, None, sink[2]] + [None] * 5, sink[:2] + [None] * 6), NAMES, cfg)
    assert d.reject and d.evidence == 4.5 and ", unsure" not in d.reason


def test_strong_sightings_are_matched_before_unsure_ones() -> None:
    # A track at (100, 100); next frame a 0.9 at 30 px and a 0.35 at 5 px: the strong one
    # continues it (closest first would hand it the unsure blob and start a second track).
    frames = _two([(100, 100), (100, 130)], [None, (100, 105)], n=2)
    first, blob = link_tracks(frames, NAMES, DecisionConfig(track_threshold=0.3))
    assert first.scores == [pytest.approx(0.9)] * 2 and first.sure == 2
    assert blob.frames == [1] and blob.sure == 0  # the blob starts a track of its own


def test_unsure_sightings_never_undo_a_reject() -> None:
    # Sure sightings: a particle moving 8 px sideways (moving: evidence 3.0, a reject).
    # Unsure ones then climb 10 px a frame from where it was: linked, the path reads as
    # a rising bubble (6 of 7 steps up) and would count for nothing.
    climb = [None, None, *[(108, 100 - 10 * k) for k in range(1, 7)]]
    frames = _two([(100, 100), (108, 100), *[None] * 6], climb)
    cfg = DecisionConfig(track_threshold=0.3)
    (tr,) = link_tracks(frames, NAMES, cfg)
    assert tr.path(cfg) == RISING
    d = decide(frames, NAMES, cfg)
    assert d.reject and "moving particle (8 px), seen in 2/8 frames" in d.reason


def test_a_large_marks_jittering_box_is_static_a_slow_sinker_is_not() -> None:
    # A 20-30 px mark's box wobbles its centre by up to 3 px: the path's extent reaches
    # moving_distance in most containers, but its halves sit in one place.
    rng = np.random.default_rng(0)
    cfg = DecisionConfig()
    marks = [np.tile([300.0, 200.0], (8, 1)) + rng.uniform(-3, 3, (8, 2)) for _ in range(200)]
    wide = [m for m in marks if np.linalg.norm(m.max(0) - m.min(0)) >= cfg.moving_distance]
    assert len(wide) > 150  # the extent alone would call these moving
    assert sum(classify_path(m, cfg) == STATIC for m in wide) > 0.7 * len(wide)
    # A particle sinking 1 px a frame travels 7 px in 8 frames: still a particle.
    t = np.arange(8.0)
    for _ in range(50):
        sink = np.stack([300 + 0.3 * t, 200 + t], 1) + rng.uniform(-0.5, 0.5, (8, 2))
        assert classify_path(sink, cfg) == MOVING


@pytest.mark.parametrize("factor", [2.0, 4.0, 5 / 3])
def test_a_finer_camera_decides_as_the_reference_one(factor: float) -> None:
    """The same scenes seen by a camera `factor` times finer (same field of view): with
    distances set for the 384-px-high camera (reference_height 384) and taken in_frame(its
    height), every decision and track is the one that camera gives. Unscaled px would
    split a fast particle's track (its jumps exceed match_distance)."""
    rng = np.random.default_rng(3)
    cfg = DecisionConfig(reference_height=384)
    fine = cfg.in_frame(round(384 * factor))
    kinds = ["rising", "sinking", "swirling", "static", "jittering"]
    for i in range(60):
        path = _path(kinds[i % 5], rng, n=8)
        if i % 3 == 0:  # a fast sinker: 30 px a frame at the reference height
            path[:, 1] = path[0, 1] + 30 * np.arange(8)
        ref = _frames([tuple(p) for p in path], n=8)
        seen = [Detections(d.boxes * factor, d.scores, d.labels) for d in ref]
        a, b = decide(ref, NAMES, cfg), decide(seen, NAMES, fine)
        assert (a.reject, a.tracks, a.evidence) == (b.reject, b.tracks, b.evidence)
    fast = _frames([(100, 100 + 30 * t) for t in range(3)], n=3)
    seen = [Detections(d.boxes * factor, d.scores, d.labels) for d in fast]
    assert decide(seen, NAMES, fine).reject
    # Unscaled (the default), the finer camera's 50+ px jumps split it into three tracks.
    assert not decide(seen, NAMES, DecisionConfig().in_frame(768)).reject


def test_in_frame_scales_distances_only() -> None:
    cfg = DecisionConfig(reference_height=384, class_thresholds={"fiber": 0.4})
    assert cfg.in_frame(384) == cfg
    fine = cfg.in_frame(768)
    assert (fine.min_size, fine.match_distance, fine.moving_distance, fine.rising_distance) == (
        4.0,
        80.0,
        12.0,
        12.0,
    )
    assert fine.min_evidence == cfg.min_evidence and fine.class_thresholds == {"fiber": 0.4}
    assert cfg.in_frame(192).match_distance == 20.0
    off = DecisionConfig()
    assert off.reference_height == 0 and off.in_frame(768) == off  # the frame's px
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="frame height"):
            cfg.in_frame(bad)
