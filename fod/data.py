"""Data verbs: `fod synth` and `fod import {coco,tianchi}`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from fod.args import class_list, non_negative_int, positive_int, size_wh
from training.data.synth_looks import HELD_OUT, LOOK_CHOICES, TRAIN_FAMILIES


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic lamp-inspection set (COCO + sequences)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist or be empty)"
    )
    p.add_argument(
        "--images", type=non_negative_int, default=200, help="still images (default 200)"
    )
    p.add_argument(
        "--sequences", type=non_negative_int, default=20, help="container sequences (default 20)"
    )
    p.add_argument(
        "--frames", type=positive_int, default=12, help="frames per container (default 12)"
    )
    p.add_argument("--size", type=size_wh, default=(1280, 800), help="WxH (default 1280x800)")
    p.add_argument(
        "--seed", type=non_negative_int, default=0, help="same seed, same bytes (default 0)"
    )
    p.add_argument(
        "--preset",
        choices=("default", "hard"),
        default="default",
        help="hard: fainter, defocused particles, more noise and look-alikes (a benchmark "
        "that ranks distillation methods)",
    )
    p.add_argument(
        "--look",
        choices=LOOK_CHOICES,
        default="classic",
        help="classic: the first sets' look (same seed, same bytes); random: each image a "
        f"training family ({', '.join(TRAIN_FAMILIES)}); or one family. Held out of random: "
        f"{', '.join(HELD_OUT)}",
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=min(os.cpu_count() or 1, 8),
        help="worker processes (default: the number of cores, at most 8)",
    )
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("import", help="validate a real data set and copy it into the COCO layout")
    p.add_argument("format", choices=["coco", "tianchi"], help="source format")
    p.add_argument(
        "src", type=Path, help="source folder (annotations JSON + images) or the JSON file"
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist or be empty)"
    )
    p.add_argument(
        "--classes",
        type=class_list,
        help="comma-separated class names: the set's categories in this order, as a model "
        "trained on them has them (a name the set lacks: a class without boxes)",
    )
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.set_defaults(func=cmd_import)


def cmd_synth(args: argparse.Namespace) -> int:
    from training.data.synth import PRESETS, SynthConfig
    from training.data.synth_writer import write_synthetic_set

    cfg = SynthConfig(
        width=args.size[0],
        height=args.size[1],
        frames=args.frames,
        look=args.look,
        **PRESETS[args.preset],
    )
    counts = write_synthetic_set(
        args.out,
        args.images,
        args.sequences,
        cfg,
        args.seed,
        workers=args.workers,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps({"out": str(args.out), **counts}))
    else:
        print(
            f"wrote {args.out}: {counts['images']} images "
            f"({counts['negatives']} without particles), "
            f"{counts['annotations']} boxes, {counts['sequences']} sequences "
            f"({counts['rejects']} holding particles); preview: {args.out / 'preview.png'}"
        )
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from training.data.importers import import_coco, import_tianchi

    fn = import_coco if args.format == "coco" else import_tianchi
    counts = fn(args.src, args.out, args.classes)
    if args.json:
        print(json.dumps({"out": str(args.out), **counts}))
    else:
        crowd = counts["crowd_as_boxes"]
        print(
            f"imported {counts['images']} images ({counts['negatives']} negatives), "
            f"{counts['annotations']} boxes in {counts['categories']} categories into {args.out}"
            + (f"; {crowd} crowd region(s) (iscrowd 1) kept as single boxes" if crowd else "")
        )
    return 0
