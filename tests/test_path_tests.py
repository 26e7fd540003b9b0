"""The decision's tests for look-alikes whose path fools the basic rules: the wander test
(opt-in) and the jump test (on by default), on hand-made and recorded paths."""

from __future__ import annotations

import numpy as np

from edge.decision import (
    MOVING,
    RISING,
    STATIC,
    DecisionConfig,
    classify_path,
    classify_track,
    decide,
    jumps,
)
from edge.postprocess import Detections

from .test_decision import NAMES, _frames, _path


def test_a_wandering_box_is_a_mark_only_with_wander_on() -> None:
    # A look-alike's box wanders 4 px about one place as its outline or label changes:
    # the halves' test misses a third of them; the wander test (opt-in) reads them static.
    rng = np.random.default_rng(1)
    off, on = DecisionConfig(), DecisionConfig(wander_straightness=0.3)
    marks = [np.tile([300.0, 200.0], (8, 1)) + rng.uniform(-4, 4, (8, 2)) for _ in range(300)]
    assert sum(classify_path(m, off) == MOVING for m in marks) > 60
    assert sum(classify_path(m, on) == MOVING for m in marks) <= 15
    # Smooth paths never wander: sinkers, swirls (their sideways turn included), a particle
    # sinking 1.5 px a frame under 1 px of jitter, and a bubble.
    t = np.arange(8.0)
    for _ in range(50):
        for kind, want in (("sinking", MOVING), ("swirling", MOVING), ("rising", RISING)):
            assert classify_path(_path(kind, rng), on) == want
        slow = np.stack([300 + 0.3 * t, 200 + 1.5 * t], 1) + rng.uniform(-1, 1, (8, 2))
        assert classify_path(slow, on) == MOVING
    # A swirl seen across its turn: it goes back the way it came, smoothly.
    turn = np.stack([300 + 20 * np.sin(np.linspace(0.3, 2.6, 8)), 200 + 0.5 * t], 1)
    assert classify_path(turn, off) == MOVING == classify_path(turn, on)


def test_wander_on_lets_a_wandering_look_alike_pass_not_a_particle() -> None:
    # A good container of the probe look (seed 12): a look-alike's box in 7 of 8
    # frames, as the demo model placed it, wandering 9 px.
    xy = [(430, 266), (432, 273), (432, 270), (432, 264), None, (429, 267), (429, 266)]
    frames = _frames([*xy, (429, 266)], label=2, n=8)
    assert decide(frames, NAMES, DecisionConfig()).reject  # read as a moving particle
    on = DecisionConfig(wander_straightness=0.3)
    d = decide(frames, NAMES, on)
    assert not d.reject and "static: mark" in d.reason
    # A particle sinking 3 px a frame beside it still rejects.
    sink = _frames([(200, 100 + 3 * t) for t in range(8)], n=8)
    both = [
        Detections(
            np.concatenate([a.boxes, b.boxes]),
            np.concatenate([a.scores, b.scores]),
            np.concatenate([a.labels, b.labels]),
        )
        for a, b in zip(frames, sink)
    ]
    d = decide(both, NAMES, on)
    assert d.reject and "moving particle" in d.reason and "static: mark" in d.reason


# Two bubbles in a good container of the probe look (seed 13): the demo's track centres,
# moved by (-268, -57), as box corners. One rises 4 px a frame, then the next, 28 px away,
# rises after it; linking joins them by a jump.
BUBBLES = [
    *[(100, 100), (101, 95), (101, 91), (100, 87)],  # the first bubble
    *[(121, 108), (121, 105), (122, 100), (125, 96)],  # the next
]


def test_two_bubbles_joined_by_a_jump_are_not_a_particle() -> None:
    frames = _frames(BUBBLES, n=8)
    off = DecisionConfig(jump_distance=0)
    d = decide(frames, NAMES, off)
    assert d.reject and "moving particle" in d.reason  # as one path it goes nowhere straight
    d = decide(frames, NAMES, DecisionConfig())
    assert not d.reject and "rising: bubble (33 px), seen in 8/8 frames" in d.reason
    c = np.array(BUBBLES, dtype=float) + 3.0  # box centres
    assert jumps(c, np.arange(8), DecisionConfig()).tolist() == [4]
    # A bubble rising into a mark: the longest piece names it.
    mark = np.array([*c[:3], *[(160.0, 140.0)] * 5])
    assert classify_track(mark, np.arange(8), DecisionConfig()) == STATIC


def test_a_jump_never_hides_a_moving_piece() -> None:
    # A particle sinking 2 px a frame, then its track taken by a bubble 30 px away: the
    # particle's piece moves, so every frame of the track counts.
    sink = [(200, 100 + 2 * t) for t in range(4)]
    bubble = [(215, 130 - 4 * t) for t in range(4)]
    c = np.array(sink + bubble, dtype=float)
    assert jumps(c, np.arange(8), DecisionConfig()).tolist() == [4]
    d = decide(_frames(sink + bubble, n=8), NAMES, DecisionConfig())
    assert d.reject and "moving particle (34 px), seen in 8/8 frames, evidence 12.0" in d.reason
    # Fast across missed frames is not a jump: speed is px per frame.
    c = np.array([(300.0, 100.0 + 8 * t) for t in (0, 1, 2, 5, 6, 7)])
    assert not len(jumps(c, np.array([0, 1, 2, 5, 6, 7]), DecisionConfig()))


def test_the_jump_test_reads_no_particle_differently() -> None:
    """Hand-made particles (sinking 0.5-15 px a frame, swirling, under up to 3 px of
    detector jitter, some frames missed): the jump test never changes how one reads."""
    rng = np.random.default_rng(4)
    cfg = DecisionConfig()
    t = np.arange(8.0)
    changed = []
    for i in range(2000):
        v, jitter = rng.uniform(0.5, 15), rng.uniform(0, 3)
        if i % 2:
            xy = np.stack([300 + 0.3 * v * t, 100 + v * t], 1)
        else:
            a = rng.uniform(8, 25)
            xy = np.stack([300 + a * np.sin(0.5 * t) * np.exp(-t / 8), 100 + v * t], 1)
        seen = np.sort(rng.choice(8, size=int(rng.integers(3, 9)), replace=False))
        c = xy[seen] + rng.uniform(-jitter, jitter, (len(seen), 2))
        if classify_track(c, seen, cfg) != classify_path(c, cfg):
            changed.append((v, jitter))
    assert not changed
