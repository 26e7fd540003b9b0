"""How the opt-in wander test (`decision.wander_straightness`) reads hand-made paths.

Marks whose box wanders about one place, and slow particles sinking under detector
jitter, 8 frames each: the share read as a moving particle by default and with the
wander test on. Prints a Markdown table; same seed, same figures.
Usage: python benchmarks/wander_paths.py [--n 400] [--straightness 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from edge.decision import MOVING, DecisionConfig, classify_path


def share_moving(paths: np.ndarray, cfg: DecisionConfig) -> float:
    """Share of paths [N, T, 2] read as moving."""
    return float(np.mean([classify_path(p, cfg) == MOVING for p in paths]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="paths per row")
    ap.add_argument("--straightness", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    off = DecisionConfig()
    on = dataclasses.replace(off, wander_straightness=args.straightness)
    t = np.arange(8.0)
    print("| path (8 frames) | jitter (px, uniform +-) | moving, default | moving, wander on |")
    print("|---|---|---|---|")
    rows = [("mark, in place", 0.0, j) for j in (2, 3, 4, 5)]
    rows += [(f"particle sinking {v} px/frame", v, j) for v in (1, 1.5, 2, 3) for j in (1, 2, 3)]
    for name, speed, jitter in rows:
        clean = np.stack([300 + 0.3 * speed * t, 200 + speed * t], 1)  # [T, 2]
        paths = clean[None] + rng.uniform(-jitter, jitter, (args.n, len(t), 2))  # [N, T, 2]
        print(
            f"| {name} | {jitter:g} | {share_moving(paths, off):.1%} "
            f"| {share_moving(paths, on):.1%} |"
        )


if __name__ == "__main__":
    main()
