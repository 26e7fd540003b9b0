"""Deployment verbs: `fod calibrate`, `fod bundle make|verify`, `fod keygen`."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict

from edge.logsink import say
from fod.args import non_negative_int, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="INT8 Q/DQ ONNX + TensorRT cache + FP32-vs-INT8 report")
    p.add_argument("--onnx", type=Path, required=True, help="FP32 ONNX from `fod export`")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="where the calibration images come from: a COCO set, or a folder of the line's "
        "unlabelled images (then --val is required)",
    )
    p.add_argument("--val", type=Path, help="set for the FP32-vs-INT8 metrics (default: --data)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist or be empty)"
    )
    p.add_argument(
        "--images", type=positive_int, default=500, help="calibration images (default 500)"
    )
    p.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy")
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="image choice and student noise (default 0)",
    )
    p.add_argument(
        "--keep-float",
        nargs="*",
        metavar="NODE",
        help="nodes to keep float instead of the default head tail; give none to quantize all",
    )
    p.add_argument(
        "--trt-version", type=int, default=8501, help="header of calib.cache (default 8501)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("bundle", help="deployable bundles: `fod bundle make` / `fod bundle verify`")
    bsub = p.add_subparsers(dest="bundle_verb", metavar="{make,verify}")
    bsub.required = True
    m = bsub.add_parser(
        "make",
        help="make a bundle from the models, cache and report",
        description="Copy the models, calibration cache and report into a new bundle with a "
        "manifest (sha256 of every file), optionally signed (Ed25519).",
    )
    m.add_argument("--onnx", type=Path, help="FP32 ONNX (from `fod export`)")
    m.add_argument("--int8", type=Path, help="Q/DQ INT8 ONNX from `fod calibrate` (TensorRT)")
    m.add_argument("--int8-cpu", type=Path, help="uint8-activation INT8 ONNX (ONNX Runtime on CPU)")
    m.add_argument("--cache", type=Path, help="TensorRT calibration cache (calib.cache)")
    m.add_argument("--report", type=Path, help="report.json from `fod calibrate`")
    m.add_argument("--out", type=Path, required=True, help="bundle folder (or with --tar, .tar.gz)")
    m.add_argument("--name", default="pharma-fod", help="bundle name")
    m.add_argument("--version", dest="bundle_version", default="0.1.0", help="bundle version")
    m.add_argument(
        "--sign", type=Path, metavar="KEY", help="Ed25519 private key (from `fod keygen`)"
    )
    m.add_argument(
        "--reference",
        type=Path,
        metavar="D",
        help="a labelled set (annotations.json + images/ at the model's input size, its "
        "categories named as the model's classes): images with objects of every class go "
        "into the bundle as reference frames, which the unit's backend must find, in all and "
        "per class, before it runs and while it runs (fod check, fod run, rollouts)",
    )
    m.add_argument(
        "--reference-images",
        type=positive_int,
        default=8,
        metavar="N",
        help="reference frames (8)",
    )
    m.add_argument("--tar", action="store_true", help="write one .tar.gz")
    m.add_argument(
        "--recipe", action="append", metavar="CMD", help="a command that made it (repeatable)"
    )
    m.set_defaults(func=cmd_bundle_make)
    v = bsub.add_parser(
        "verify",
        help="check a bundle's files against its manifest (and its signature)",
        description="Check that every file of bundle B (folder or .tar.gz) matches the sha256 "
        "in its manifest, that none is missing or extra, and with --public-key that the "
        "manifest is signed by that key. Exit 0 when it verifies, 2 with the reason if not.",
    )
    v.add_argument("bundle", type=Path, metavar="B", help="bundle folder or .tar.gz")
    v.add_argument("--public-key", type=Path, help="require a signature by this key")
    v.set_defaults(func=cmd_bundle_verify)

    p = sub.add_parser(
        "keygen", help="make an Ed25519 key pair for signing bundles or a unit's audit trail"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for NAME.key and NAME.pub")
    p.add_argument(
        "--name", default="fod_signing", help="file name of the pair (default fod_signing)"
    )
    p.set_defaults(func=cmd_keygen)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from fod.calibrate import run_calibration

    report = run_calibration(args)
    if args.json:
        print(
            json.dumps(
                {
                    "out": str(args.out),
                    "metrics": report["metrics"],
                    "drop_points": report["drop_points"],
                    "speedup": report["speedup"],
                    "speedup_cpu": report["speedup_cpu"],
                    "float_nodes": len(report["float_nodes"]),
                }
            )
        )
    else:
        print(calibrate_summary(report, args.out))
    return 0


def calibrate_summary(report: Dict[str, Any], out: Path) -> str:
    """One line for the console: AP50 FP32 -> INT8 and INT8-CPU with signed changes (a loss
    reads minus), and the speed-ups ONNX Runtime measured here. The Q/DQ model's CPU figure
    is named as such: alone, a "CPU speed-up 0.8x" read as INT8 being slower, while the
    unit runs it on TensorRT and the CPU runs the INT8-CPU model."""
    m = report["metrics"]
    # The report stores drops (FP32 - INT8); + 0.0 turns a -0.0 ("-0.00 points") into 0.
    change = -report["drop_points"]["ap50"] + 0.0
    change_cpu = -report["drop_points_cpu"]["ap50"] + 0.0
    return (
        f"INT8 in {out}: AP50 {m['fp32']['ap50']:.4f} -> {m['int8']['ap50']:.4f} "
        f"({change:+.2f} points; INT8-CPU {m['int8_cpu']['ap50']:.4f}, {change_cpu:+.2f}); "
        f"speed-up on this CPU: INT8-CPU {report['speedup_cpu']:.2f}x, "
        f"the Q/DQ model for TensorRT {report['speedup']:.2f}x; see {out / 'report.md'}"
    )


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    from edge.bundle import open_bundle

    with open_bundle(args.bundle, args.public_key) as b:
        signed = " and its signature" if args.public_key else ""
        print(f"{args.bundle}: {len(b.manifest['files'])} files match the manifest{signed}")
    return 0


def cmd_bundle_make(args: argparse.Namespace) -> int:
    from edge.bundle import create_bundle
    from edge.errors import FodError
    from fod.calibrate import bundle_meta

    models = [p for p in (args.onnx, args.int8_cpu, args.int8) if p is not None]
    if not models:
        raise FodError("a bundle needs a model: --onnx, --int8 or --int8-cpu")
    files = {}
    extra = (
        ("fp32", args.onnx),
        ("int8", args.int8),
        ("int8_cpu", args.int8_cpu),
        ("cache", args.cache),
        ("report", args.report),
    )
    for role, p in extra:
        if p is not None:
            files[role] = p
    meta = bundle_meta(args.name, args.bundle_version, files)
    if args.recipe:
        meta["recipe"] = list(args.recipe)  # the commands that made it, for the record
    with tempfile.TemporaryDirectory() as work:
        if args.reference is not None:
            from fod.reference_frames import make_reference, unjudged_classes

            # Measured on this CPU: the INT8-CPU model first, then the Q/DQ one, then FP32.
            models = [(r, p) for r, p in extra[:3][::-1] if p is not None]
            files["reference"], meta["reference"] = make_reference(
                args.reference, args.reference_images, models, Path(work) / "reference.npz"
            )
            for line in unjudged_classes(meta["reference"], meta["classes"]):
                say(f"fod bundle make: {line}")
        path = create_bundle(args.out, files, meta, sign_key=args.sign, tar=args.tar)
    print(f"wrote {path}: {', '.join(sorted(files))}{' (signed)' if args.sign else ''}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge.signing import generate_keypair

    key, pub = generate_keypair(args.out, args.name)
    print(f"wrote {key} (keep it secret) and {pub} (install on the units)")
    return 0
