"""The distillation table's external row: Ultralytics YOLO11s, what most users would pick
instead, trained from scratch by its own API on the same sets and scored by the same
pycocotools path as `fod compare` (calibration.metrics), with the same post-processing
limits (score 0.05, NMS IoU 0.6, 100 per image), clean and with the student noise on
every val image (training.compare.NoisyCoco), beside its per-image latency.

Ultralytics is not a dependency of pharma-fod: run this where it is installed, e.g.

    pip install --target /tmp/ul ultralytics   # plus what it needs that is missing
    PYTHONPATH=/tmp/ul:$PWD python benchmarks/yolo_row.py --train D --val V --out DIR \\
        [--epochs 30 | --hours H] [--batch 16] [--imgsz 640] [--device 0|cpu] [--workers 8]

Writes DIR/yolo_row.json and DIR/yolo_row.md (`fod compare`'s columns, plus latency).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibration.metrics import coco_metrics, load_gt, show
from edge.postprocess import PostprocessConfig
from training.compare import HEADERS, METRICS, NoisyCoco
from training.data.dataset import CocoDetection

_POST = PostprocessConfig()  # GFL's own test settings, the same limits for both
SCORE, NMS_IOU, MAX_DET = _POST.score_threshold, _POST.nms_iou, _POST.max_per_image


def to_yolo(root: Path, split: str, out: Path) -> List[str]:
    """A COCO set (annotations.json + images/) as Ultralytics reads one: images/SPLIT
    (links to the PNGs) and labels/SPLIT/<stem>.txt (class cx cy w h, normalised).
    Returns the class names, class index = rank of the COCO category id."""
    coco = json.loads((root / "annotations.json").read_text())
    cats = sorted(c["id"] for c in coco["categories"])
    index = {cid: i for i, cid in enumerate(cats)}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    boxes: Dict[int, List[str]] = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a)
    (out / "images" / split).mkdir(parents=True, exist_ok=True)
    (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for im in coco["images"]:
        src = (root / "images" / im["file_name"]).resolve()
        link = out / "images" / split / Path(im["file_name"]).name
        if not link.exists():
            os.symlink(src, link)
        w, h = im["width"], im["height"]
        lines = []
        for a in boxes.get(im["id"], []):
            x, y, bw, bh = a["bbox"]
            lines.append(
                f"{index[a['category_id']]} {(x + bw / 2) / w:.6f} {(y + bh / 2) / h:.6f} "
                f"{bw / w:.6f} {bh / h:.6f}"
            )
        (out / "labels" / split / f"{link.stem}.txt").write_text("\n".join(lines))
    return [names[c] for c in cats]


def detect(model: Any, data: Any, cats: List[int], args: argparse.Namespace) -> Tuple[list, list]:
    """COCO detections of `model` on every image of `data` (RGB samples), and the
    per-image latency (ms: preprocess + inference + postprocess, as Ultralytics times it)."""
    dets, ms = [], []
    for i in range(len(data)):
        s = data[i]
        r = model.predict(
            s.image[:, :, ::-1].copy(),  # Ultralytics takes arrays in OpenCV's BGR order
            imgsz=args.imgsz, conf=SCORE, iou=NMS_IOU, max_det=MAX_DET,
            device=args.device, verbose=False,
        )[0]  # fmt: skip
        ms.append(sum(r.speed.values()))
        for (x1, y1, x2, y2), c, p in zip(
            r.boxes.xyxy.tolist(), r.boxes.cls.tolist(), r.boxes.conf.tolist()
        ):
            dets.append({
                "image_id": int(s.image_id), "category_id": cats[int(c)],
                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(p),
            })  # fmt: skip
    return dets, ms


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--val", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", default="yolo11s.yaml", help="architecture (from scratch)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument(
        "--hours",
        type=float,
        default=0.0,
        help="train for this long instead (Ultralytics' `time`: after the first epoch it "
        "sets the epochs, and the lr schedule with them, to fit)",
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--device", default="0")
    p.add_argument("--workers", type=int, default=8)
    args = p.parse_args(argv)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # no hub, no fonts: a closed machine
    from ultralytics import YOLO  # the harness's own environment

    data = args.out / "data"
    names = to_yolo(args.train, "train", data)
    if to_yolo(args.val, "val", data) != names:
        raise SystemExit(f"{args.val}: other classes than {args.train}")
    yaml = data / "data.yaml"
    yaml.write_text(
        f"path: {data.resolve()}\ntrain: images/train\nval: images/val\nnames:\n"
        + "".join(f"  {i}: {n}\n" for i, n in enumerate(names))
    )
    t0 = time.perf_counter()
    model = YOLO(args.model)
    model.train(
        data=str(yaml), epochs=args.epochs, batch=args.batch, imgsz=args.imgsz,
        device=args.device, workers=args.workers, pretrained=False, plots=False, val=False,
        **({"time": args.hours} if args.hours > 0 else {}),
        project=str(args.out.resolve()), name="train", exist_ok=True, seed=0, verbose=False,
    )  # fmt: skip
    train_s = time.perf_counter() - t0
    epochs = model.trainer.epoch + 1  # with --hours, the epochs its clock allowed
    weights = args.out / "train" / "weights" / "last.pt"
    model = YOLO(str(weights))
    gt = load_gt(args.val / "annotations.json")
    cats = sorted(gt.getCatIds())  # class index -> category id, as to_yolo numbered them
    clean, ms = detect(model, CocoDetection(args.val), cats, args)
    noisy, _ = detect(model, NoisyCoco(args.val), cats, args)
    m = coco_metrics(gt, clean)[0].to_dict()
    n = coco_metrics(gt, noisy)[0].to_dict()
    warm = ms[10:] if len(ms) > 20 else ms
    row = {
        "run": "yolo11s", "model": args.model.replace(".yaml", "").upper(),
        "metrics": m, "noisy": n,
        "params_m": sum(q.numel() for q in model.model.parameters()) / 1e6,
        "latency_ms_median": statistics.median(warm), "train_seconds": train_s,
        "epochs": epochs,
        "hours": args.hours, "batch": args.batch, "imgsz": args.imgsz, "device": args.device,
    }  # fmt: skip
    (args.out / "yolo_row.json").write_text(json.dumps(row, indent=2))
    head = ["run", "model", *HEADERS, "AP50 noisy", "AP noisy", "params (M)", "ms/image"]
    cells = [row["run"], row["model"], *[show(m[k], 100, ".1f") for k in METRICS],
             show(n["ap50"], 100, ".1f"), show(n["ap"], 100, ".1f"), f"{row['params_m']:.2f}",
             f"{row['latency_ms_median']:.2f}"]  # fmt: skip
    md = "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                    "| " + " | ".join(cells) + " |"]) + "\n"  # fmt: skip
    (args.out / "yolo_row.md").write_text(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
