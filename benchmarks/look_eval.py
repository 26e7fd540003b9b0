"""Frame-level figures of a model on one or more sets: AP50/AP overall and per class, and
the sighting recall by particle size - what the line's decision sees.

    python benchmarks/look_eval.py --model models/demo --data SET [--data SET ...]
        [--score 0.5] [--by FIELD] [--mirror] [--json out.json]

--model: a bundle (its INT8 CPU model, else INT8, else FP32) or an .onnx file; it runs
through the edge pipeline (ONNX Runtime, letterbox, numpy postprocess). A sighting is a
labelled particle with a detection of any class scoring >= --score whose centre lies
within max(4 px, half the box diagonal) of the particle's centre; sizes are the box's
longer side in source pixels. --mirror runs each image again mirrored left-right and merges
the views, as the line's `model.mirror`. --by FIELD splits the figures by a field of the
`look` each image of a `fod synth` set records (family, background, lighting, container,
...).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from pycocotools.coco import COCO

from calibration.metrics import coco_metrics, load_gt, show
from edge.bundle import open_bundle
from training.data.dataset import CocoDetection
from training.evaluation import predict_onnx

SIZE_BINS = ((2, 5), (6, 8), (9, 10_000))


def per_class_ap(ev: Any, names: List[str]) -> Dict[str, Dict[str, Optional[float]]]:
    """AP50 and AP per class from an accumulated COCOeval (area all, 100 detections); None
    for a class without objects in the images evaluated."""
    p = ev.eval["precision"]  # [T, R, K, A, M]
    out = {}
    for k, name in enumerate(names):
        pk = p[:, :, k, 0, -1]  # [T, R]
        valid = pk > -1
        out[name] = {
            "ap50": float(pk[0][valid[0]].mean()) if valid[0].any() else None,
            "ap": float(pk[valid].mean()) if valid.any() else None,
        }
    return out


def sighting_recall(
    data: CocoDetection, dets: List[Dict[str, Any]], score: float
) -> Dict[str, Dict[str, float]]:
    by_image: Dict[int, List[List[float]]] = {}
    for d in dets:
        if d["score"] >= score:
            x, y, w, h = d["bbox"]
            by_image.setdefault(d["image_id"], []).append([x + w / 2, y + h / 2])
    hits = {b: [0, 0] for b in SIZE_BINS}
    for img in data.coco.images:
        centres = np.asarray(by_image.get(img.id, []), np.float64).reshape(-1, 2)
        for a in data.coco.annotations.get(img.id, []):
            x, y, w, h = a.bbox
            side = max(w, h)
            b = next((b for b in SIZE_BINS if b[0] <= side <= b[1]), None)
            if b is None:
                continue
            reach = max(4.0, 0.5 * float(np.hypot(w, h)))
            d = np.hypot(centres[:, 0] - (x + w / 2), centres[:, 1] - (y + h / 2))
            hits[b][0] += bool((d <= reach).any())
            hits[b][1] += 1
    return {
        f"{lo}-{hi if hi < 10_000 else 'up'}px": {
            "recall": h / n if n else 0.0,
            "particles": n,
        }
        for (lo, hi), (h, n) in hits.items()
    }


def by_look(
    gt: COCO, dets: List[Dict[str, Any]], field: str, names: List[str]
) -> Dict[str, Dict[str, Any]]:
    """AP50/AP overall and per class (with its object count) for each value of the images'
    `look[field]`; images without that field group under `?`. A field no image records
    (a typo, or a set made without looks) raises ValueError naming the fields there are."""
    groups: Dict[str, List[int]] = {}
    for img in gt.dataset["images"]:
        groups.setdefault(str(img.get("look", {}).get(field, "?")), []).append(img["id"])
    if list(groups) == ["?"]:
        known = sorted({k for img in gt.dataset["images"] for k in img.get("look", {})})
        raise ValueError(f"no image records look field {field!r} (fields: {known or 'none'})")
    out = {}
    for value, ids in sorted(groups.items()):
        metrics, ev = coco_metrics(gt, dets, img_ids=ids)  # the group's images only
        objects = {
            c["name"]: len(gt.getAnnIds(imgIds=ids, catIds=[c["id"]]))
            for c in gt.dataset["categories"]
        }
        nothing = {n: 0.0 if objects.get(n) else None for n in names}  # no detection at all
        classes = (
            per_class_ap(ev, names)
            if ev is not None
            else {n: {"ap50": v, "ap": v} for n, v in nothing.items()}
        )
        out[value] = {
            "images": len(ids),
            "ap50": metrics.ap50,
            "ap": metrics.ap,
            "per_class": {n: {**v, "objects": objects.get(n, 0)} for n, v in classes.items()},
        }
    return out


def evaluate(
    model: Path, data_root: Path, score: float, by: str = "", mirror: bool = False
) -> Dict[str, Any]:
    data = CocoDetection(data_root)
    dets = predict_onnx(model, data, threads=None, mirror=mirror)
    gt = load_gt(data_root / "annotations.json")
    metrics, ev = coco_metrics(gt, dets)
    out = {
        "data": str(data_root),
        **metrics.to_dict(),
        "per_class": per_class_ap(ev, data.class_names) if ev is not None else {},
        "sighting_recall": sighting_recall(data, dets, score),
    }
    if by:
        try:
            out["by"] = {by: by_look(gt, dets, by, data.class_names)}
        except ValueError as e:
            print(f"look_eval: {data_root}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="bundle or .onnx")
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--score", type=float, default=0.5)
    p.add_argument("--by", default="", help="split by this field of each image's look")
    p.add_argument("--mirror", action="store_true", help="also run each image mirrored")
    p.add_argument("--json", type=Path, help="write the results here too")
    args = p.parse_args()
    if args.model.suffix == ".onnx":
        results = [evaluate(args.model, d, args.score, args.by, args.mirror) for d in args.data]
    else:
        with open_bundle(args.model) as b:
            roles = {e["role"]: name for name, e in b.manifest["files"].items()}
            name = next(roles[r] for r in ("int8_cpu", "int8", "onnx") if r in roles)
            results = [
                evaluate(b.root / name, d, args.score, args.by, args.mirror) for d in args.data
            ]
    for r in results:
        classes = " ".join(
            f"{k} {show(v['ap50'], spec='.3f')}/{show(v['ap'], spec='.3f')}"
            for k, v in r["per_class"].items()
        )
        sizes = " ".join(
            f"{k} {v['recall']:.2f} (n={v['particles']})" for k, v in r["sighting_recall"].items()
        )
        head = f"AP50 {show(r['ap50'], spec='.3f')} AP {show(r['ap'], spec='.3f')}"
        print(f"{r['data']}: {head} | per class AP50/AP: {classes}")
        print(f"  sighting recall at score {args.score}: {sizes}")
        for value, g in r.get("by", {}).get(args.by, {}).items():
            classes = " ".join(
                f"{k} {show(v['ap50'], spec='.3f')} (n={v['objects']})"
                for k, v in g["per_class"].items()
            )
            ap50 = show(g["ap50"], spec=".3f")
            print(f"  {args.by} {value} ({g['images']} images): AP50 {ap50} | {classes}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "results": results}, indent=1))


if __name__ == "__main__":
    main()
