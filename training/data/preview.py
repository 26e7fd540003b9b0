"""Contact sheet of a COCO set: a grid of frames with their boxes, and zoomed particle crops.

Particles are a few pixels wide, invisible in a downscaled grid, so the bottom row
shows crops around boxes at 4x: what a person checking the data wants to see.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np

# BGR colours per category index (cycled); look-alikes are never drawn (they are unlabelled).
_COLOURS = ((0, 0, 255), (0, 200, 0), (255, 128, 0), (0, 200, 255), (255, 0, 255), (255, 255, 0))


def _colour(category_index: int) -> Tuple[int, int, int]:
    return _COLOURS[category_index % len(_COLOURS)]


def _round_robin(candidates: List[Tuple[int, np.ndarray]], n: int) -> List[np.ndarray]:
    """Up to n crops, taking the categories in turn so every class gets shown."""
    queues: Dict[int, List[np.ndarray]] = {}
    for cat, crop in candidates:
        queues.setdefault(cat, []).append(crop)
    out: List[np.ndarray] = []
    while len(out) < n and any(queues.values()):
        for cat in sorted(queues):
            if queues[cat] and len(out) < n:
                out.append(queues[cat].pop(0))
    return out


def contact_sheet(
    images: Sequence[np.ndarray],
    boxes: Sequence[List[Tuple[List[float], int]]],
    names: Dict[int, str],
    columns: int = 4,
    tile_width: int = 480,
    crops: int = 8,
    crop_size: int = 48,
    zoom: int = 4,
) -> np.ndarray:
    """A BGR sheet: `images` (grey or BGR) with `boxes` [(xywh, category_id), ...] per image."""
    order = sorted(names)
    tiles: List[np.ndarray] = []
    candidates: List[Tuple[int, np.ndarray]] = []
    for img, anns in zip(images, boxes):
        bgr = img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        s = tile_width / bgr.shape[1]
        tile = cv2.resize(bgr, (tile_width, round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
        for (x, y, w, h), cat in anns:
            col = _colour(order.index(cat))
            p0 = (int(x * s) - 3, int(y * s) - 3)
            p1 = (int((x + w) * s) + 3, int((y + h) * s) + 3)
            cv2.rectangle(tile, p0, p1, col, 1)
            if len(candidates) < 8 * crops:
                cx, cy = int(x + w / 2), int(y + h / 2)
                half = max(crop_size // 2, int(max(w, h) / 2) + 4)
                padded = cv2.copyMakeBorder(bgr, half, half, half, half, cv2.BORDER_CONSTANT)
                crop = padded[cy : cy + 2 * half, cx : cx + 2 * half]
                crop = cv2.resize(
                    crop, (crop_size * zoom, crop_size * zoom), interpolation=cv2.INTER_NEAREST
                )
                k = crop_size * zoom / (2 * half)
                bx0 = int((x - cx + half) * k) - 2
                by0 = int((y - cy + half) * k) - 2
                cv2.rectangle(
                    crop, (bx0, by0), (bx0 + int(w * k) + 4, by0 + int(h * k) + 4), col, 1
                )
                cv2.putText(
                    crop, names[cat], (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1, cv2.LINE_AA
                )
                candidates.append((cat, crop))
        tiles.append(tile)
    patches = _round_robin(candidates, crops)
    if not tiles:
        raise ValueError("contact sheet needs at least one image")
    th = max(t.shape[0] for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, th - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles]
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    sheet = np.vstack(rows)
    if patches:
        strip = np.hstack(patches)
        if strip.shape[1] > sheet.shape[1]:
            strip = strip[:, : sheet.shape[1]]
        strip = cv2.copyMakeBorder(
            strip, 4, 0, 0, sheet.shape[1] - strip.shape[1], cv2.BORDER_CONSTANT
        )
        sheet = np.vstack([sheet, strip])
    return sheet


def write_coco_preview(root: Path, out: Path, limit: int = 8) -> None:
    """Preview of the first `limit` images of the COCO set at `root` (annotations.json, images/)."""
    import json

    from edge.fsutil import write_png

    data = json.loads((root / "annotations.json").read_text(encoding="utf-8"))
    names = {c["id"]: c["name"] for c in data["categories"]}
    by_image: Dict[int, list] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append((a["bbox"], a["category_id"]))
    # Positives first: the sheet is there to show particles.
    recs = sorted(data["images"], key=lambda r: (r["id"] not in by_image, r["id"]))[:limit]
    imgs = [cv2.imread(str(root / "images" / r["file_name"]), cv2.IMREAD_UNCHANGED) for r in recs]
    sheet = contact_sheet(imgs, [by_image.get(r["id"], []) for r in recs], names)
    write_png(out, sheet)
