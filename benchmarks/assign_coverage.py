"""How many tiny particles ATSS trains on: the share of random specks that get at least
one positive anchor, with the paper's ATSS and with the nearest-anchor fallback.

    python benchmarks/assign_coverage.py [--size 640x384] [--specks 2000] [--seed 0]

A speck that gets no positive is background to the classifier in every image it is in:
the detector is taught not to see it. The fallback costs nothing at inference (the
assignment exists only in training), so its price is paid in no GMACs and no latency.
"""

from __future__ import annotations

import argparse

import torch

from fod.args import size_wh
from training.assigner import atss_assign
from training.box_ops import grid_points
from training.criterion import GFLCriterion
from training.models.config import HeadConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=size_wh, default=(640, 384))
    p.add_argument("--specks", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    w, h = args.size
    head = HeadConfig(num_classes=3)
    pts, strides, counts = grid_points(
        [(h // s, w // s) for s in head.strides], head.strides, torch.device("cpu")
    )
    anchors = GFLCriterion(head).anchors(pts, strides)
    g = torch.Generator().manual_seed(args.seed)
    print(f"{w}x{h}, {args.specks} random specks per side length, share with a positive anchor:")
    for side in (2, 3, 4, 5, 6, 8):
        xy = torch.rand(args.specks, 2, generator=g) * torch.tensor([w - 40.0, h - 40.0]) + 20
        got = {False: 0, True: 0}
        for x, y in xy.tolist():
            box = torch.tensor([[x, y, x + side, y + side]])
            for nearest in got:
                got[nearest] += bool(
                    (atss_assign(anchors, counts, box, nearest=nearest) == 0).any()
                )
        print(
            f"  {side} px: atss {got[False] / args.specks:6.1%}   "
            f"atss-near {got[True] / args.specks:6.1%}"
        )


if __name__ == "__main__":
    main()
