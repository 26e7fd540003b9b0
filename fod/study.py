"""Study verbs: `fod compare` (runs side by side, the paper's Tables 4/5 layout) and
`fod heatmap` (FPN feature heatmaps, the paper's Fig. 5)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fod.args import positive_int, size_wh


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="runs side by side: AP50, AP, AP_small, AR, params, GMACs")
    p.add_argument("--runs", type=Path, nargs="+", required=True, help="run folders (or .pt)")
    p.add_argument("--data", type=Path, required=True, help="validation set (COCO)")
    p.add_argument("--out", type=Path, required=True, help="folder for compare.md/.csv/.json")
    p.add_argument(
        "--size", type=size_wh, help="eval and GMACs WxH (default: the runs' training size)"
    )
    p.add_argument("--noisy", action="store_true", help="also evaluate with the student noise")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument(
        "--jobs", type=positive_int, default=1, help="runs evaluated at once (processes)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("heatmap", help="FPN feature heatmaps of models over one image (PNG)")
    p.add_argument("--weights", type=Path, nargs="+", required=True, help="runs or .pt files")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="folder for heatmap.png")
    p.add_argument("--level", type=int, default=0, help="pyramid level, 0 = P3 (stride 8)")
    p.set_defaults(func=cmd_heatmap)


def cmd_compare(args: argparse.Namespace) -> int:
    from edge.errors import FodError
    from training.compare import compare, table, training_size, write
    from training.engine.distributed import pick_device

    size = args.size or training_size(args.runs)
    if size[0] % 32 or size[1] % 32:
        raise FodError(f"--size {size[0]}x{size[1]}: both sides must be divisible by 32")
    device = pick_device(args.device, 0)
    rows = compare(args.runs, args.data, size, device, args.noisy, args.jobs)
    write(rows, args.out, size)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows]))
    else:
        print(table(rows, size)[0], end="")
        print(f"wrote {args.out / 'compare.md'}, compare.csv, compare.json")
    return 0


def cmd_heatmap(args: argparse.Namespace) -> int:
    from training.heatmap import heatmaps

    path, titles = heatmaps(args.weights, args.image, args.out, args.level)
    print(f"wrote {path}: {'; '.join(titles)}")
    return 0
