"""COCO detection JSON: strict validation into a small typed index.

Every error names the file and the first bad record, so a person can fix the
set; nothing downstream ever sees an image without a size or a box outside its
image.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge.errors import DataError

BOX_TOLERANCE = 1.0  # px a box may poke out of its image (float rounding in exporters); clipped


@dataclass(frozen=True)
class Category:
    id: int
    name: str


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class Annotation:
    id: int
    image_id: int
    category_id: int
    bbox: tuple  # (x, y, w, h) in pixels, inside the image


@dataclass
class CocoSet:
    """A validated set: categories in file order, images, and annotations per image."""

    source: Path
    categories: List[Category]
    images: List[ImageRecord]
    annotations: Dict[int, List[Annotation]] = field(default_factory=dict)
    crowd: int = 0  # source annotations marked iscrowd 1, kept as single boxes (written 0)

    @property
    def num_annotations(self) -> int:
        return sum(len(v) for v in self.annotations.values())

    def to_json(self, info: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        anns = [a for im in self.images for a in self.annotations.get(im.id, [])]
        return {
            "info": info or {},
            "images": [
                {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}
                for i in self.images
            ],
            "annotations": [
                {
                    "id": a.id,
                    "image_id": a.image_id,
                    "category_id": a.category_id,
                    "bbox": list(a.bbox),
                    "area": a.bbox[2] * a.bbox[3],
                    "iscrowd": 0,
                }
                for a in anns
            ],
            "categories": [{"id": c.id, "name": c.name} for c in self.categories],
        }


def read_json(path: Path) -> Dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object at the top, got {type(data).__name__}")
    return data


def _what(kind: str, k: int, rec: Any) -> str:
    """'annotation #3 (id 17)': position in the file, and the id when the record has one."""
    if isinstance(rec, dict) and "id" in rec:
        return f"{kind} #{k} (id {rec['id']!r})"
    return f"{kind} #{k}"


def _require(path: Path, what: str, rec: Any, keys: Sequence[str]) -> None:
    if not isinstance(rec, dict):
        raise DataError(f"{path}: {what}: expected an object, got {rec!r:.80}")
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataError(f"{path}: {what}: missing key {missing[0]!r}")


def _int_id(path: Path, what: str, value: Any, key: str = "id") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{path}: {what}: {key} must be an integer, got {value!r}")
    return value


def parse_coco(data: Dict[str, Any], path: Path) -> CocoSet:
    """Validate COCO detection JSON `data` read from `path` (files are not checked here)."""
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: missing top-level key {key!r}")
        if not isinstance(data[key], list):
            raise DataError(f"{path}: {key!r} must be a list")

    cats: List[Category] = []
    seen: set = set()
    for k, rec in enumerate(data["categories"]):
        what = _what("category", k, rec)
        _require(path, what, rec, ("id", "name"))
        cid = _int_id(path, what, rec["id"])
        if cid in seen:
            raise DataError(f"{path}: {what}: duplicate category id {cid}")
        seen.add(cid)
        cats.append(Category(cid, str(rec["name"])))

    images: List[ImageRecord] = []
    sizes: Dict[int, ImageRecord] = {}
    names: set = set()
    for k, rec in enumerate(data["images"]):
        what = _what("image", k, rec)
        _require(path, what, rec, ("id", "file_name", "width", "height"))
        iid = _int_id(path, what, rec["id"])
        if iid in sizes:
            raise DataError(f"{path}: {what}: duplicate image id {iid}")
        w, h = rec["width"], rec["height"]
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)):
            raise DataError(
                f"{path}: {what}: width and height must be positive integers, got {w}x{h}"
            )
        name = rec["file_name"]
        if (
            not isinstance(name, str)
            or not name
            or Path(name).is_absolute()
            or ".." in Path(name).parts
        ):
            raise DataError(f"{path}: {what}: file_name must be a relative path, got {name!r}")
        if name in names:
            raise DataError(f"{path}: {what}: file_name {name!r} listed twice")
        names.add(name)
        sizes[iid] = ImageRecord(iid, name, w, h)
        images.append(sizes[iid])

    anns: Dict[int, List[Annotation]] = {}
    seen = set()
    crowd = 0
    for k, rec in enumerate(data["annotations"]):
        what = _what("annotation", k, rec)
        _require(path, what, rec, ("id", "image_id", "category_id", "bbox"))
        aid = _int_id(path, what, rec["id"])
        if aid in seen:
            raise DataError(f"{path}: {what}: duplicate annotation id {aid}")
        seen.add(aid)
        img = sizes.get(rec["image_id"])
        if img is None:
            raise DataError(f"{path}: {what}: unknown image_id {rec['image_id']!r}")
        cid = rec["category_id"]
        if not any(c.id == cid for c in cats):
            raise DataError(f"{path}: {what}: unknown category_id {cid!r}")
        box = rec["bbox"]
        if (
            not isinstance(box, list)
            or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        ):
            raise DataError(f"{path}: {what}: bbox must be [x, y, w, h] numbers, got {box!r}")
        x, y, w, h = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x, y, w, h)):  # NaN passes every comparison below
            raise DataError(f"{path}: {what}: bbox {box} holds a non-finite number")
        if w <= 0 or h <= 0:
            raise DataError(f"{path}: {what}: bbox {box} has non-positive width or height")
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > img.width + t or y + h > img.height + t:
            raise DataError(
                f"{path}: {what}: bbox {box} outside image {img.id} ({img.width}x{img.height})"
            )
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(img.width)), min(y + h, float(img.height))
        anns.setdefault(img.id, []).append(Annotation(aid, img.id, cid, (x0, y0, x1 - x0, y1 - y0)))
        # A crowd region (a cluster) stays one box, an object for training and evaluation
        # alike: for pycocotools an ignored region, it would be neither found nor missed.
        crowd += rec.get("iscrowd") == 1
    return CocoSet(path, cats, images, anns, crowd)


def classes_hint(want: Sequence[str], have: Sequence[str]) -> str:
    """Where a set's classes `have` are the model's `want` in another order, or some of
    them: how to import it with the model's (appended to the refusal), else ""."""
    if list(have) == list(want) or not set(have) <= set(want):
        return ""
    return (
        f" (`fod import coco SRC --out DIR --classes {','.join(want)}` writes the set with "
        "these classes in this order)"
    )


def with_classes(coco: CocoSet, names: Sequence[str]) -> CocoSet:
    """`coco` with its categories in the order of `names`: a name the set lacks becomes a
    category without boxes (ids after the set's own), a category without boxes left out is
    dropped; DataError for a name listed twice or a category with boxes left out."""
    path = coco.source
    if len(set(names)) != len(names) or not all(names):
        raise DataError(f"--classes {','.join(names)}: each class once, none empty")
    by_name: Dict[str, Category] = {}
    for c in coco.categories:
        if c.name in by_name:
            raise DataError(f"{path}: category name {c.name!r} used twice: cannot order by name")
        by_name[c.name] = c
    boxes = Counter(a.category_id for anns in coco.annotations.values() for a in anns)
    for c in coco.categories:
        if c.name not in names and boxes[c.id]:
            n = boxes[c.id]
            raise DataError(
                f"{path}: category {c.name!r} ({n} box{'' if n == 1 else 'es'}) is not in "
                f"--classes {','.join(names)}"
            )
    next_id = max((c.id for c in coco.categories), default=0) + 1
    cats = []
    for name in names:
        if name not in by_name:
            by_name[name] = Category(next_id, name)
            next_id += 1
        cats.append(by_name[name])
    return CocoSet(coco.source, cats, coco.images, coco.annotations, coco.crowd)


def load_coco(root: Path) -> CocoSet:
    """Read and validate `root/annotations.json` (our layout: images under `root/images`)."""
    ann = root / "annotations.json"
    if not ann.is_file() and root.is_dir():
        raise DataError(
            f"{ann}: file not found: {root} is not a set in this package's layout "
            f"(annotations.json + images/); `fod import coco {root} --out DIR` makes one"
        )
    return parse_coco(read_json(ann), ann)
