"""How far a distilled student's FPN maps drift in scale from its teacher's: per level,
the median over channels of each channel's std (over the images and positions), as a
multiple of the teacher's.

    python benchmarks/feature_spread.py --teacher RUN-T/last.pt --runs RUN... \
        --data VAL [--images 8]

A feature loss on maps normalised by their own per-channel statistics (PKD, `ours
--features own`) cannot see the student's scale; its gradient falls as 1 / that scale,
and the steps it takes lengthen the map, so such students end far above 1 here, while
raw-map imitation keeps them near the teacher's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List

import numpy as np
import torch

from edge.errors import FodError
from training.checkpoint import load_detector
from training.compare import pick_checkpoint
from training.data.dataset import CocoDetection


@torch.no_grad()
def level_spreads(weights: Path, x: torch.Tensor) -> List[float]:
    """Median per-channel std of each FPN level of the model in `weights` on x [N, 3, H, W]."""
    model, *_ = load_detector(weights)
    return [f.std(dim=(0, 2, 3)).median().item() for f in model.features(x)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint or run")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="checkpoints or runs")
    p.add_argument("--data", type=Path, required=True, help="a COCO set (its first images)")
    p.add_argument("--images", type=int, default=8)
    args = p.parse_args()
    try:
        val = CocoDetection(args.data)
        images: List[np.ndarray] = []  # the first ones of the first image's size
        for i in range(len(val)):
            a = val[i].image
            if not images or a.shape == images[0].shape:
                images.append(a)
            if len(images) == args.images:
                break
        if not images:
            raise FodError(f"{args.data}: no images")
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()  # [N, 3, H, W]
        t = level_spreads(pick_checkpoint(args.teacher), x)
        print("level            " + " ".join(f"P{i + 3:<5d}" for i in range(len(t))))
        print("teacher std      " + " ".join(f"{v:<6.2f}" for v in t))
        for run in args.runs:
            s = level_spreads(pick_checkpoint(run), x)
            print(f"{run.name:<16.16s} " + " ".join(f"{a / b:<6.1f}" for a, b in zip(s, t)))
    except FodError as e:
        print(f"feature_spread: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
