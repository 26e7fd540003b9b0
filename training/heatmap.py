"""`fod heatmap`: FPN feature heatmaps of several models over one image, side by side, as
the paper's Fig. 5 compares teacher, plain student and distilled student.

Per model: the image letterboxed to the model size, its features at one pyramid level,
the mean absolute activation over channels, normalised to [0, 1] per model, upsampled
to the image and blended over it with a colour map; each panel titled with its run.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import torch

from edge.errors import FodError
from edge.fsutil import write_png
from edge.preprocess import letterbox

from .checkpoint import load_detector
from .compare import describe, pick_checkpoint
from .data.dataset import read_rgb


def activation_map(model: torch.nn.Module, image: np.ndarray, level: int) -> np.ndarray:
    """Mean |feature| over channels at `level` (0 = P3), normalised to [0, 1]. -> [h, w]."""
    x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()[None]
    with torch.no_grad():
        feats = model.features(x)
    if not 0 <= level < len(feats):
        raise FodError(f"--level {level}: the model has levels 0..{len(feats) - 1}")
    a = feats[level][0].abs().mean(dim=0).numpy()  # [h, w]
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def panel(image_rgb: np.ndarray, act: np.ndarray, title: str) -> np.ndarray:
    """The image (BGR) with the activation blended over it, a title bar above."""
    h, w = image_rgb.shape[:2]
    heat = cv2.applyColorMap(
        (cv2.resize(act, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8),
        cv2.COLORMAP_JET,
    )
    base = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    out = cv2.addWeighted(base, 0.45, heat, 0.55, 0)
    bar = np.full((28, w, 3), 255, np.uint8)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.5
    while scale > 0.25 and cv2.getTextSize(title, font, scale, 1)[0][0] > w - 8:
        scale -= 0.05  # shrink the title to fit its panel rather than cut it
    cv2.putText(bar, title, (4, 19), font, scale, (20, 20, 20), 1, cv2.LINE_AA)
    return np.vstack([bar, out])


def heatmaps(
    weights: List[Path], image_path: Path, out: Path, level: int = 0
) -> Tuple[Path, List[str]]:
    """Write `out/heatmap.png` (panels left to right in the order given); returns it and
    the panel titles."""
    rgb = read_rgb(image_path)  # as training and evaluation read it (EXIF orientation ignored)
    panels, titles = [], []
    for w in weights:
        path = pick_checkpoint(w)
        model, cfg, _, ckpt = load_detector(path)
        size = tuple(ckpt.get("train_config", {}).get("size") or (rgb.shape[1], rgb.shape[0]))
        boxed, _ = letterbox(rgb, (int(size[0]), int(size[1])))
        label, method = describe(ckpt, cfg)
        title = f"{w.name if w.is_dir() else w.stem}: {label}, {method}"
        panels.append(panel(boxed, activation_map(model, boxed, level), title))
        titles.append(title)
    height = max(p.shape[0] for p in panels)
    panels = [
        np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), 255, np.uint8)]) for p in panels
    ]
    gap = np.full((height, 8, 3), 255, np.uint8)
    row = panels[0]
    for p in panels[1:]:
        row = np.hstack([row, gap, p])
    out.mkdir(parents=True, exist_ok=True)
    write_png(out / "heatmap.png", row)
    return out / "heatmap.png", titles
