"""Pictures of an evaluation: PR curves per class, and val images with truth and predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from pycocotools.cocoeval import COCOeval

from edge.fsutil import write_png


def plot_pr_curves(ev: Optional[COCOeval], class_names: Sequence[str], out: Path) -> None:
    """One panel per class: precision vs recall at IoU 0.5 and 0.75 (all areas, 100 dets).

    `ev` None (no detection at all) still writes the figure, saying so in each panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prec = ev.eval["precision"] if ev is not None else None  # [T, R, K, A, M]
    rec = ev.params.recThrs if ev is not None else None
    k = len(class_names)
    fig, axes = plt.subplots(1, k, figsize=(4 * k, 4), squeeze=False)
    for i, name in enumerate(class_names):
        ax = axes[0, i]
        if prec is None:
            ax.text(0.5, 0.5, "no detections", ha="center", va="center")
        for t, iou in ((0, 0.5), (5, 0.75)) if prec is not None else ():
            p = prec[t, :, i, 0, -1]
            if (p >= 0).any():
                ap = p[p >= 0].mean()
                ax.plot(rec, np.clip(p, 0, None), label=f"IoU {iou}: AP {ap:.3f}")
        ax.set(title=name, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        if prec is not None:
            ax.legend(loc="lower left")
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out)


GT_COLOUR = (0, 200, 0)  # BGR
PRED_COLOUR = (0, 0, 255)


def detection_grid(
    images: Sequence[np.ndarray],
    truths: Sequence[List[Tuple[List[float], int]]],
    preds: Sequence[List[Tuple[List[float], int, float]]],
    names: Dict[int, str],
    out: Path,
    columns: int = 3,
    tile_width: int = 640,
    min_score: float = 0.3,
) -> None:
    """Tiles of RGB images: truth boxes green, predictions (score >= min_score) red with scores."""
    tiles = []
    for img, gts, dets in zip(images, truths, preds):
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        s = tile_width / bgr.shape[1]
        tile = cv2.resize(bgr, (tile_width, round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
        for (x, y, w, h), _ in gts:
            cv2.rectangle(
                tile,
                (int(x * s) - 4, int(y * s) - 4),
                (int((x + w) * s) + 4, int((y + h) * s) + 4),
                GT_COLOUR,
                1,
            )
        for (x, y, w, h), cat, score in dets:
            if score < min_score:
                continue
            p0 = (int(x * s) - 2, int(y * s) - 2)
            cv2.rectangle(tile, p0, (int((x + w) * s) + 2, int((y + h) * s) + 2), PRED_COLOUR, 1)
            cv2.putText(
                tile,
                f"{names.get(cat, cat)} {score:.2f}",
                (p0[0], max(p0[1] - 3, 10)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.35,
                PRED_COLOUR,
                1,
                cv2.LINE_AA,
            )
        tiles.append(tile)
    if not tiles:
        return
    th = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, th - t.shape[0], 0, 2, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)])
    cv2.putText(
        sheet,
        "green: truth   red: prediction",
        (8, 18),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    write_png(out, sheet)
