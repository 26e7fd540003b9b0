"""benchmarks/look_eval.py --by: figures split by a field of each image's recorded look."""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path

import pytest
from pycocotools.coco import COCO

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "look_eval.py"
NAMES = ["fiber", "particle", "glass_flake"]


@pytest.fixture(scope="module")
def look_eval():
    """The script as a module, loaded once (it is not a package)."""
    spec = importlib.util.spec_from_file_location("look_eval", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _gt() -> COCO:
    """Five images: two on checker, two on stripes, one without a recorded look."""
    looks = ["checker", "checker", "stripes", "stripes", None]
    images, anns = [], []
    for i, bg in enumerate(looks, start=1):
        img = {"id": i, "file_name": f"{i}.png", "width": 64, "height": 64}
        if bg:
            img["look"] = {"family": "cartridge", "background": bg}
        images.append(img)
        for k, cat in enumerate((1, 3) if i % 2 else (2,)):  # fiber+flake or a particle
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": cat,
                    "bbox": [4 + 20 * k, 8, 10, 10],
                    "area": 100.0,
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def test_by_look_scores_each_group_on_its_own_images(look_eval) -> None:
    gt = _gt()
    # Exact boxes on the checker images and the look-less one; the stripes images get a
    # detection far from any object.
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in gt.dataset["annotations"]
        if a["image_id"] in (1, 2, 5)
    ]
    dets += [{"image_id": 3, "category_id": 1, "bbox": [40, 40, 10, 10], "score": 0.9}]
    out = look_eval.by_look(gt, dets, "background", NAMES)
    assert sorted(out) == ["?", "checker", "stripes"]
    assert out["checker"]["images"] == 2 and out["checker"]["ap50"] == pytest.approx(1.0)
    assert out["stripes"]["ap50"] == 0.0
    assert {n: v["objects"] for n, v in out["stripes"]["per_class"].items()} == {
        "fiber": 1,
        "particle": 1,
        "glass_flake": 1,
    }
    assert out["checker"]["per_class"]["glass_flake"] == pytest.approx(
        {"ap50": 1.0, "ap": 1.0, "objects": 1}
    )
    assert out["?"]["images"] == 1 and out["?"]["ap50"] == pytest.approx(1.0)
    # the whole set's figure sits between the groups': the split is not the whole set again
    assert 0.0 < look_eval.coco_metrics(gt, dets)[0].ap50 < 1.0


def test_by_look_names_a_field_no_image_records(look_eval) -> None:
    with pytest.raises(ValueError, match=r"'backgrund' \(fields: \['background', 'family'\]\)"):
        look_eval.by_look(_gt(), [], "backgrund", NAMES)
