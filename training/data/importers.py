"""`fod import`: validate a real set and copy it into our layout (annotations.json + images/).

Everything is checked before anything is written (JSON, ids, categories, boxes,
and every image file decoded), and the output folder appears only when complete.
"""

from __future__ import annotations

import math
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence

import cv2
from tqdm import tqdm

from edge.errors import DataError
from edge.fsutil import atomic_write_json, staged_dir

from .coco import CocoSet, parse_coco, read_json, with_classes
from .dataset import decode, depth_problem

TIANCHI_BACKGROUND = "背景"  # "background": the Tianchi set's no-defect category
# Decode at 1/8 scale: JPEG skips most of the IDCT, yet the whole stream is read. At its
# own depth, which must be 8 bits (`depth_problem`).
_PROBE_FLAGS = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_IGNORE_ORIENTATION | cv2.IMREAD_ANYDEPTH


def _locate(src: Path) -> Path:
    """The annotation JSON of a source given as a folder or as its JSON file."""
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if src.is_file():
        ann = src
    else:
        ann = src / "annotations.json"
        if not ann.is_file():
            found = sorted(src.glob("*.json"))
            if len(found) != 1:
                raise DataError(
                    f"{src}: expected annotations.json or exactly one *.json, found {len(found)}"
                )
            ann = found[0]
    return ann


def _image_root(coco: CocoSet, ann: Path) -> Path:
    """The folder the set's file_names are relative to: `images/` beside the JSON, or the
    JSON's own folder (exporters such as Label Studio write `images/x.jpg` file names
    beside the JSON). The first under which every file exists, else the one where most do,
    so a missing file is then named where the rest of the set lies."""
    roots = [r for r in (ann.parent / "images", ann.parent) if r.is_dir()]
    found = [sum((r / i.file_name).is_file() for i in coco.images) for r in roots]
    return roots[found.index(max(found))]


def _probe(path: Path, width: int, height: int) -> Optional[str]:
    """None if `path` decodes to width x height, else what is wrong with it."""
    if not path.is_file():
        hint = " (its file_name holds a backslash: write paths with /)" if "\\" in path.name else ""
        return "image file missing" + hint
    img = decode(path, _PROBE_FLAGS)
    if isinstance(img, str):
        return f"image file unreadable ({img})"
    problem = depth_problem(img)
    if problem is not None:
        return problem
    want = (math.ceil(height / 8), math.ceil(width / 8))
    if abs(img.shape[0] - want[0]) > 1 or abs(img.shape[1] - want[1]) > 1:
        got = f"{img.shape[1] * 8}x{img.shape[0] * 8}"
        return f"image is about {got}, annotations say {width}x{height}"
    return None


def _check_files(coco: CocoSet, images: Path, workers: int = 4) -> None:
    jobs = [(images / r.file_name, r.width, r.height) for r in coco.images]
    with ThreadPoolExecutor(workers) as ex:  # OpenCV decodes without the GIL
        results = ex.map(lambda j: _probe(*j), jobs)
        progress = tqdm(
            zip(jobs, coco.images, results),
            total=len(jobs),
            desc="checking images",
            leave=False,
            disable=None,
        )  # None: no bar when stderr is not a terminal
        for (path, _, _), rec, problem in progress:
            if problem is not None:
                raise DataError(f"{path}: image id {rec.id}: {problem}")


def _write(coco: CocoSet, images: Path, out: Path, info: Dict[str, str]) -> Dict[str, int]:
    with staged_dir(out) as tmp:
        for rec in tqdm(coco.images, desc="copying", leave=False, disable=None):
            dst = tmp / "images" / rec.file_name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(images / rec.file_name, dst)
        atomic_write_json(tmp / "annotations.json", coco.to_json(info))
    return {
        "images": len(coco.images),
        "annotations": coco.num_annotations,
        "negatives": sum(1 for r in coco.images if not coco.annotations.get(r.id)),
        "categories": len(coco.categories),
        "crowd_as_boxes": coco.crowd,
    }


def import_coco(src: Path, out: Path, classes: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Import a COCO detection set as it is (its categories in the order of `classes`)."""
    ann = _locate(src)
    coco = parse_coco(read_json(ann), ann)
    if classes:
        coco = with_classes(coco, classes)
    images = _image_root(coco, ann)
    _check_files(coco, images)
    return _write(coco, images, out, {"source": str(ann), "format": "coco"})


def import_tianchi(src: Path, out: Path, classes: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Import the Tianchi liquor-bottle set: drop the background category, keep its images.

    1145 of its images hold only `背景` boxes, which mark "no defect": they become
    negatives, which the detector needs as much as the defects.
    """
    ann = _locate(src)
    coco = parse_coco(read_json(ann), ann)
    bg = [c.id for c in coco.categories if c.name == TIANCHI_BACKGROUND]
    if not bg:
        raise DataError(
            f"{ann}: no {TIANCHI_BACKGROUND!r} (background) category: is this the Tianchi set?"
        )
    coco = replace(
        coco,
        categories=[c for c in coco.categories if c.id not in bg],
        annotations={
            iid: [a for a in anns if a.category_id not in bg]
            for iid, anns in coco.annotations.items()
        },
    )
    if classes:
        coco = with_classes(coco, classes)
    images = _image_root(coco, ann)
    _check_files(coco, images)
    return _write(coco, images, out, {"source": str(ann), "format": "tianchi"})
