"""benchmarks/yolo_row.py without Ultralytics (not a dependency): the COCO -> YOLO labels
it trains on, and the detections -> pycocotools path it scores with, checked by a model
that answers with the ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import torch

from calibration.metrics import coco_metrics, load_gt
from training.data.dataset import CocoDetection

from .conftest import load_script

yolo_row = load_script("yolo_row")


def test_labels_are_the_coco_boxes_normalised(small_set: Path, tmp_path: Path) -> None:
    names = yolo_row.to_yolo(small_set, "val", tmp_path)
    coco = json.loads((small_set / "annotations.json").read_text())
    assert names == [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    cats = sorted(c["id"] for c in coco["categories"])
    for im in coco["images"]:
        link = tmp_path / "images" / "val" / Path(im["file_name"]).name
        assert link.resolve() == (small_set / "images" / im["file_name"]).resolve()
        rows = [r.split() for r in (tmp_path / "labels" / "val" / f"{link.stem}.txt")
                .read_text().splitlines()]  # fmt: skip
        truth = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        assert len(rows) == len(truth)
        for r, a in zip(rows, truth):
            c, cx, cy, w, h = int(r[0]), *map(float, r[1:])
            assert cats[c] == a["category_id"]
            x, y = (cx - w / 2) * im["width"], (cy - h / 2) * im["height"]
            got = [x, y, w * im["width"], h * im["height"]]
            assert all(abs(g - b) < 1e-3 for g, b in zip(got, a["bbox"])), (got, a["bbox"])


class TruthModel:
    """Answers each image with its own ground truth, as Ultralytics' Results carry it."""

    def __init__(self, root: Path) -> None:
        coco = json.loads((root / "annotations.json").read_text())
        self.cats = sorted(c["id"] for c in coco["categories"])
        self.by_image = {}
        for a in coco["annotations"]:
            self.by_image.setdefault(a["image_id"], []).append(a)
        self.data, self.i = CocoDetection(root), 0

    def predict(self, image, **kw) -> list:
        truth = self.by_image.get(int(self.data[self.i].image_id), [])
        assert image.shape == self.data[self.i].image.shape and kw["conf"] == 0.05
        self.i += 1
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in truth)]
        boxes = SimpleNamespace(
            xyxy=torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4),
            cls=torch.tensor([float(self.cats.index(a["category_id"])) for a in truth]),
            conf=torch.ones(len(truth)),
        )
        return [SimpleNamespace(boxes=boxes, speed={"preprocess": 1.0, "inference": 2.0})]


def test_detections_reach_pycocotools_as_the_truth(small_set: Path) -> None:
    model = TruthModel(small_set)
    args = argparse.Namespace(imgsz=640, device="cpu")
    dets, ms = yolo_row.detect(model, CocoDetection(small_set), model.cats, args)
    assert ms == [3.0] * len(model.data)
    m = coco_metrics(load_gt(small_set / "annotations.json"), dets)[0]
    assert m.ap50 == 1.0 and m.ap == 1.0  # boxes, classes and image ids all line up
