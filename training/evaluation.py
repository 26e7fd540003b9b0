"""Evaluate a PyTorch detector on a COCO set: detections -> pycocotools metrics + pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from calibration.metrics import Metrics, coco_metrics, load_gt
from calibration.plots import detection_grid, plot_pr_curves
from edge.errors import FodError
from edge.preprocess import boxes_to_source

from .data.coco import classes_hint
from .data.dataset import CocoDetection
from .engine.data import EvalSet, collate_eval
from .postprocess import GFLPostprocess


def coco_detections(
    image_id: int, boxes: Any, scores: Any, labels: Any, cat_ids: List[int]
) -> List[Dict[str, Any]]:
    """One image's detections (xyxy boxes, scores, 0-based labels) as COCO result records."""
    return [
        {
            "image_id": image_id,
            "category_id": cat_ids[int(lab)],
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(score),
        }
        for b, score, lab in zip(boxes, scores, labels)
    ]


@torch.no_grad()
def predict(
    model: nn.Module,
    post: GFLPostprocess,
    data: CocoDetection,
    size: Tuple[int, int],
    device: torch.device,
    batch: int = 4,
) -> List[Dict[str, Any]]:
    """COCO-format detections (source-image xywh) for every image of `data`."""
    model.eval()
    cat_ids = [c.id for c in data.coco.categories]
    loader = DataLoader(EvalSet(data, size), batch_size=batch, collate_fn=collate_eval)
    out: List[Dict[str, Any]] = []
    for images, ids, lbs in tqdm(loader, desc="eval", unit="batch", disable=None):
        x = images.to(device, non_blocking=True).float()  # [N, 3, H, W] 0-255
        cls, reg = model(x)
        for det, image_id, lb in zip(post(cls, reg, (size[1], size[0])), ids, lbs):
            boxes = boxes_to_source(det["boxes"].cpu().numpy(), lb)  # [K, 4] xyxy source px
            out += coco_detections(
                image_id, boxes, det["scores"].tolist(), det["labels"].tolist(), cat_ids
            )
    return out


def require_classes(path: Path, class_names: Sequence[str], data: CocoDetection) -> None:
    """FodError unless the model in `path` has `data`'s classes, in its order."""
    if list(class_names) != list(data.class_names):
        raise FodError(
            f"{path}: classes {list(class_names)} differ from {data.root}'s {data.class_names}"
            + classes_hint(list(class_names), data.class_names)
        )


def predict_onnx(
    path: Path, data: CocoDetection, threads: Optional[int] = None, mirror: bool = False
) -> List[Dict[str, Any]]:
    """COCO-format detections of an exported (FP32 or Q/DQ INT8) ONNX model, through the edge
    pipeline: letterbox, ONNX Runtime, numpy postprocess (with `mirror`, each image also run
    mirrored and merged, as `model.mirror`). What is measured here is what the device
    computes."""
    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.detector import EdgeDetector

    backend = OnnxRuntimeBackend(path, threads=threads)
    require_classes(path, backend.info.class_names, data)
    det = EdgeDetector(backend, backend.info, mirror=mirror)
    cat_ids = [c.id for c in data.coco.categories]
    out: List[Dict[str, Any]] = []
    for i in tqdm(range(len(data)), desc=f"eval {path.name}", unit="img", disable=None):
        s = data[i]
        d = det.detect([s.image])[0]
        out += coco_detections(s.image_id, d.boxes, d.scores, d.labels, cat_ids)
    return out


def evaluate_onnx(path: Path, data: CocoDetection, out_dir: Optional[Path] = None) -> Metrics:
    return evaluate_detections(data, predict_onnx(path, data), out_dir)


def evaluate_detections(
    data: CocoDetection,
    detections: List[Dict[str, Any]],
    out_dir: Optional[Path] = None,
    grid: int = 6,
) -> Metrics:
    """Metrics of `detections` on `data`; with `out_dir`, PR curves and a detection grid as PNG."""
    gt = load_gt(data.root / "annotations.json")
    metrics, ev = coco_metrics(gt, detections)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        plot_pr_curves(ev, data.class_names, out_dir / "pr_curves.png")
        names = {c.id: c.name for c in data.coco.categories}
        # Images with particles first: that is where a person checks the detector.
        order = sorted(
            range(len(data)), key=lambda i: not data.coco.annotations.get(data.coco.images[i].id)
        )
        chosen = order[:grid]
        samples = [data[i] for i in chosen]
        by_image: Dict[int, list] = {}
        for d in detections:
            by_image.setdefault(d["image_id"], []).append((d["bbox"], d["category_id"], d["score"]))
        truths = [
            [(list(a.bbox), a.category_id) for a in data.coco.annotations.get(s.image_id, [])]
            for s in samples
        ]
        detection_grid(
            [s.image for s in samples],
            truths,
            [by_image.get(s.image_id, []) for s in samples],
            names,
            out_dir / "detections.png",
        )
    return metrics


def evaluate_model(
    model: nn.Module,
    post: GFLPostprocess,
    data: CocoDetection,
    size: Tuple[int, int],
    device: torch.device,
    out_dir: Optional[Path] = None,
) -> Metrics:
    return evaluate_detections(data, predict(model, post, data, size, device), out_dir)
