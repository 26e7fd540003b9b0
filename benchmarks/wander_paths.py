"""How the decision's path tests read hand-made paths: the opt-in wander test
(`decision.wander_straightness`) and the jump test (`decision.jump_distance`, on by default).

Wander: marks whose box wanders about one place, and slow particles sinking under detector
jitter, 8 frames each: the share read as a moving particle by default and with the wander
test on. Jump: two look-alikes that linking joins into one track by a jump (a bubble rising
after another, a bubble into a mark), and particles sinking or swirling under jitter with
frames missed: the share read as moving with the jump test off and by default. Prints
Markdown tables; same seed, same figures.
Usage: python benchmarks/wander_paths.py [--n 400] [--straightness 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable, Dict, List, Tuple

import numpy as np

from edge.decision import MOVING, DecisionConfig, classify_path, classify_track

Track = Tuple[np.ndarray, np.ndarray]  # centres [T, 2], frames [T]


def share_moving(paths: np.ndarray, cfg: DecisionConfig) -> float:
    """Share of paths [N, T, 2] read as moving."""
    return float(np.mean([classify_path(p, cfg) == MOVING for p in paths]))


def share_moving_tracks(tracks: List[Track], cfg: DecisionConfig) -> float:
    return float(np.mean([classify_track(c, f, cfg) == MOVING for c, f in tracks]))


def wander_table(rng: np.random.Generator, n: int, straightness: float) -> None:
    off = DecisionConfig()
    on = dataclasses.replace(off, wander_straightness=straightness)
    t = np.arange(8.0)
    print("| path (8 frames) | jitter (px, uniform +-) | moving, default | moving, wander on |")
    print("|---|---|---|---|")
    rows = [("mark, in place", 0.0, j) for j in (2, 3, 4, 5)]
    rows += [(f"particle sinking {v} px/frame", v, j) for v in (1, 1.5, 2, 3) for j in (1, 2, 3)]
    for name, speed, jitter in rows:
        clean = np.stack([300 + 0.3 * speed * t, 200 + speed * t], 1)  # [T, 2]
        paths = clean[None] + rng.uniform(-jitter, jitter, (n, len(t), 2))  # [N, T, 2]
        print(
            f"| {name} | {jitter:g} | {share_moving(paths, off):.1%} "
            f"| {share_moving(paths, on):.1%} |"
        )


def two_bubbles(rng: np.random.Generator) -> np.ndarray:
    """A bubble rising 2-9 px a frame for 3-5 frames, then another 15-35 px away."""
    k = int(rng.integers(3, 6))
    a = rng.uniform(2, 9, 2)
    first = [(300 + 0.4 * i, 200 - a[0] * i) for i in range(k)]
    angle, gap = rng.uniform(0, 2 * np.pi), rng.uniform(15, 35)
    x, y = first[-1][0] + gap * np.cos(angle), first[-1][1] + gap * np.sin(angle)
    return np.array(first + [(x + 0.4 * i, y - a[1] * i) for i in range(8 - k)])


def bubble_into_mark(rng: np.random.Generator) -> np.ndarray:
    """A bubble rising 2-9 px a frame for 2-4 frames, then a mark 15-35 px away."""
    k = int(rng.integers(2, 5))
    a = rng.uniform(2, 9)
    first = [(300 + 0.4 * i, 200 - a * i) for i in range(k)]
    angle, gap = rng.uniform(0, 2 * np.pi), rng.uniform(15, 35)
    mark = (first[-1][0] + gap * np.cos(angle), first[-1][1] + gap * np.sin(angle))
    return np.array(first + [mark] * (8 - k))


def particle(rng: np.random.Generator, speed: float, swirl: bool) -> np.ndarray:
    t = np.arange(8.0)
    a = rng.uniform(8, 25) if swirl else 0.3 * speed
    x = 300 + (a * np.sin(0.5 * t) * np.exp(-t / 8) if swirl else a * t)
    return np.stack([x, 200 + speed * t], 1)


def jump_table(rng: np.random.Generator, n: int) -> None:
    on = DecisionConfig()
    off = dataclasses.replace(on, jump_distance=0.0)
    makers: Dict[str, Callable[[float], np.ndarray]] = {
        "two bubbles joined by a jump": lambda v: two_bubbles(rng),
        "a bubble, then a mark": lambda v: bubble_into_mark(rng),
        "particle sinking": lambda v: particle(rng, v, False),
        "particle swirling, sinking": lambda v: particle(rng, v, True),
    }
    rows = [(k, 0.0, 1.0, False) for k in list(makers)[:2]]  # (what, px/frame, jitter, missed)
    for v in (1.0, 3.0, 6.0, 12.0):
        rows += [("particle sinking", v, 3.0, False), ("particle sinking", v, 3.0, True)]
        rows += [("particle swirling, sinking", v, 3.0, False)]
    print("| track (8 frames) | jitter (px, +-) | moving, jump test off | moving, default |")
    print("|---|---|---|---|")
    for what, speed, jitter, missed in rows:
        tracks: List[Track] = []
        for _ in range(n):
            c = makers[what](speed)
            f = np.arange(len(c))
            if missed:  # 1-3 of its frames
                keep = np.sort(rng.choice(len(c), len(c) - int(rng.integers(1, 4)), False))
                c, f = c[keep], f[keep]
            tracks.append((c + rng.uniform(-jitter, jitter, c.shape), f))
        name = what + (f" {speed:g} px/frame" if speed else "") + (", frames missed" * missed)
        print(
            f"| {name} | {jitter:g} | {share_moving_tracks(tracks, off):.1%} "
            f"| {share_moving_tracks(tracks, on):.1%} |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="paths per row")
    ap.add_argument("--straightness", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    wander_table(rng, args.n, args.straightness)
    print()
    jump_table(rng, args.n)


if __name__ == "__main__":
    main()
