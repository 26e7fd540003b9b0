"""A metric COCO leaves undefined (AP_small and AR_small on a set without small boxes) is
reported as undefined - `n/a`, JSON null - never as 0, which reads as a model that misses
every small particle."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
from pycocotools.coco import COCO

from calibration.metrics import Metrics, coco_metrics, show
from calibration.report import build_report, drops, to_markdown
from fod.cli import main
from training.compare import Row, table


def _gt(sides) -> COCO:
    """One 128x128 image per box side, one square box of that side on each."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 128, "height": 128} for i in (1, 2)]
    anns = [
        {"id": k + 1, "image_id": k % 2 + 1, "category_id": 1, "bbox": [10, 10, s, s],
         "area": float(s * s), "iscrowd": 0}
        for k, s in enumerate(sides)
    ]  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "f"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def _exact(gt: COCO):
    return [{"image_id": a["image_id"], "category_id": 1, "bbox": a["bbox"], "score": 0.9}
            for a in gt.dataset["annotations"]]  # fmt: skip


def test_small_metrics_are_undefined_without_small_boxes() -> None:
    large = _gt([40, 50])  # 1600 and 2500 px^2: above COCO's 32^2
    m, _ = coco_metrics(large, _exact(large))
    assert m == Metrics(ap50=pytest.approx(1.0), ap=pytest.approx(1.0), ap_small=None,
                        ar=pytest.approx(1.0), ar_small=None)  # fmt: skip
    # No detection at all: 0 where there is something to find, undefined where there is not.
    assert coco_metrics(large, [])[0] == Metrics(0.0, 0.0, None, 0.0, None)
    assert coco_metrics(_gt([40, 8]), [])[0] == Metrics(0.0, 0.0, 0.0, 0.0, 0.0)
    assert coco_metrics(_gt([32]), [])[0].ap_small == 0.0  # 32x32 is small: [0, 32^2]
    assert coco_metrics(_gt([]), [])[0] == Metrics(None, None, None, None, None)
    small = _gt([8, 40])
    m, _ = coco_metrics(small, _exact(small))
    assert m.ap_small == pytest.approx(1.0) and m.ar_small == pytest.approx(1.0)


def test_tables_and_reports_say_n_a() -> None:
    assert (show(None), show(0.0), show(0.12345, 100, ".1f")) == ("n/a", "0.0000", "12.3")
    m = {"ap50": 0.5, "ap": 0.25, "ap_small": None, "ar": 0.5, "ar_small": None}
    md, csv_text = table([Row("r", "GFL-R18", "alone", m, None, 11.6, 10.1)], (640, 384))
    assert "| r | GFL-R18 | alone | 50.0 | 25.0 | n/a | 50.0 | n/a |" in md
    assert "r,GFL-R18,alone,50.0,25.0,n/a,50.0,n/a" in csv_text
    int8 = {**m, "ap50": 0.48}
    assert drops(m, int8) == {"ap50": 2.0, "ap": 0.0, "ap_small": None, "ar": 0.0,
                              "ar_small": None}  # fmt: skip
    lat = {k: {"median_ms": 10.0} for k in ("fp32", "int8", "int8_cpu")}
    calibration = {"method": "minmax", "images": 1, "data": "d", "val": "v", "seed": 0}
    report = build_report({"fp32": m, "int8": int8, "int8_cpu": m}, lat, [], calibration)
    assert "| ap_small | n/a | n/a | n/a | n/a | n/a |" in to_markdown(report)
    assert "| ap50 | 0.5000 | 0.4800 | +2.00 | 0.5000 | +0.00 |" in to_markdown(report)


def test_fod_eval_on_a_set_without_small_boxes(exported, small_set: Path, tmp_path: Path, capsys):
    data = tmp_path / "large"
    shutil.copytree(small_set, data)
    doc = json.loads((data / "annotations.json").read_text())
    for a in doc["annotations"]:
        a["area"] = 40.0 * 40.0  # COCOeval sizes boxes by this field
    (data / "annotations.json").write_text(json.dumps(doc))
    argv = ["eval", "--weights", str(exported[3]), "--data", str(data)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ap_small=n/a" in out and "ar_small=n/a" in out and "ap50=0." in out
    assert main([*argv, "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["ap_small"] is None and got["ar_small"] is None and got["ap"] >= 0.0
    assert main(["eval", "--weights", str(exported[3]), "--data", str(small_set), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert got["ap_small"] is not None  # the set as drawn: every particle is small
