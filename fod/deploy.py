"""Deployment verbs: `fod calibrate`, `fod bundle` (+ `fod bundle verify`), `fod keygen`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fod.args import positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="INT8 Q/DQ ONNX + TensorRT cache + FP32-vs-INT8 report")
    p.add_argument("--onnx", type=Path, required=True, help="FP32 ONNX from `fod export`")
    p.add_argument(
        "--data", type=Path, required=True, help="COCO set the calibration images come from"
    )
    p.add_argument("--val", type=Path, help="set for the FP32-vs-INT8 metrics (default: --data)")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist or be empty)"
    )
    p.add_argument(
        "--images", type=positive_int, default=500, help="calibration images (default 500)"
    )
    p.add_argument("--method", choices=("entropy", "percentile", "minmax"), default="entropy")
    p.add_argument("--seed", type=int, default=0, help="image choice and student noise (default 0)")
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

    p = sub.add_parser("bundle", help="make a deployable bundle, or `fod bundle verify B`")
    p.add_argument(
        "verify", nargs="*", metavar="verify B", help="verify bundle B instead of making one"
    )
    p.add_argument("--onnx", type=Path, help="FP32 ONNX")
    p.add_argument("--int8", type=Path, help="Q/DQ INT8 ONNX from `fod calibrate`")
    p.add_argument("--int8-cpu", type=Path, help="uint8-activation INT8 ONNX (ONNX Runtime on CPU)")
    p.add_argument("--cache", type=Path, help="TensorRT calibration cache")
    p.add_argument("--report", type=Path, help="report.json from `fod calibrate`")
    p.add_argument("--out", type=Path, help="bundle folder (or with --tar, B.tar.gz)")
    p.add_argument("--name", default="pharma-fod", help="bundle name")
    p.add_argument("--version", dest="bundle_version", default="0.1.0", help="bundle version")
    p.add_argument(
        "--sign", type=Path, metavar="KEY", help="Ed25519 private key (from `fod keygen`)"
    )
    p.add_argument("--public-key", type=Path, help="with verify: require a signature by this key")
    p.add_argument("--tar", action="store_true", help="write one .tar.gz")
    p.add_argument(
        "--recipe", action="append", metavar="CMD", help="a command that made it (repeatable)"
    )
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    p.add_argument("--out", type=Path, required=True, help="folder for fod_signing.key/.pub")
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
                    "float_nodes": len(report["float_nodes"]),
                }
            )
        )
    else:
        m, d = report["metrics"], report["drop_points"]
        print(
            f"INT8 in {args.out}: AP50 {m['fp32']['ap50']:.4f} -> {m['int8']['ap50']:.4f} "
            f"({d['ap50']:+.2f} points), CPU speed-up {report['speedup']:.2f}x; "
            f"see {args.out / 'report.md'}"
        )
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    from edge.bundle import create_bundle, open_bundle
    from edge.errors import FodError

    if args.verify:
        if len(args.verify) != 2 or args.verify[0] != "verify":
            raise FodError("usage: fod bundle verify B [--public-key PUB]")
        with open_bundle(Path(args.verify[1]), args.public_key) as b:
            signed = " and its signature" if args.public_key else ""
            print(f"{args.verify[1]}: {len(b.manifest['files'])} files match the manifest{signed}")
        return 0
    models = [p for p in (args.onnx, args.int8_cpu, args.int8) if p is not None]
    if not models or args.out is None:
        raise FodError("making a bundle needs --out and a model (--onnx, --int8 or --int8-cpu)")
    from fod.calibrate import bundle_meta

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
    meta = bundle_meta(args.name, args.bundle_version, models[0], args.report)
    if args.recipe:
        meta["recipe"] = list(args.recipe)  # the commands that made it, for the record
    path = create_bundle(args.out, files, meta, sign_key=args.sign, tar=args.tar)
    print(f"wrote {path}: {', '.join(sorted(files))}{' (signed)' if args.sign else ''}")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge.signing import generate_keypair

    key, pub = generate_keypair(args.out)
    print(f"wrote {key} (keep it secret) and {pub} (install on the units)")
    return 0
