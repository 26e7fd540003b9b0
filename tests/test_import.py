"""`fod import`: a valid set round-trips; bad input exits 2, names the problem, writes nothing."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

from edge.errors import DataError
from fod.cli import main
from training.data.dataset import CocoDetection


def _make_source(root: Path, tianchi: bool = False) -> dict:
    """A small real-looking source set: 4 JPEGs, COCO JSON (Tianchi-style if asked)."""
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = []
    for i in range(4):
        w, h = (492, 658) if i % 2 else (300, 410)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"img_{i}.jpg"), img)
        images.append({"id": i + 1, "file_name": f"img_{i}.jpg", "width": w, "height": h})
    if tianchi:
        cats = [
            {"id": 0, "name": "背景"},
            {"id": 1, "name": "瓶盖破损"},
            {"id": 2, "name": "标贴起皱"},
        ]
        anns = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30.5, 40]},
            {"id": 2, "image_id": 1, "category_id": 0, "bbox": [0, 0, 300, 410]},
            {"id": 3, "image_id": 2, "category_id": 0, "bbox": [0, 0, 492, 658]},  # background only
            {"id": 4, "image_id": 3, "category_id": 2, "bbox": [100, 100, 20, 20]},
        ]
    else:
        cats = [{"id": 1, "name": "fiber"}, {"id": 2, "name": "particle"}]
        anns = [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40]},
            {"id": 2, "image_id": 3, "category_id": 2, "bbox": [100, 100, 5, 6]},
        ]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return data


def test_coco_import_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_source(src)
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 0
    ds = CocoDetection(tmp_path / "out")
    assert len(ds) == 4 and ds.class_names == ["fiber", "particle"]
    s = ds[0]
    assert s.image.shape == (410, 300, 3)
    np.testing.assert_allclose(s.boxes, [[10, 20, 40, 60]])
    assert s.labels.tolist() == [0]
    assert len(ds[1].boxes) == 0  # images without boxes are kept: negatives


def test_a_crowd_region_is_kept_as_one_box_and_said(tmp_path: Path, capsys) -> None:
    """iscrowd 1 (a cluster labelled as one region): pycocotools would ignore it in
    evaluation while training learnt it; imported as a plain box, and the import says so."""
    src = tmp_path / "src"
    data = _make_source(src)
    data["annotations"][1]["iscrowd"] = 1
    (src / "annotations.json").write_text(json.dumps(data))
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "2 boxes in 2 categories" in (out := capsys.readouterr().out)
    assert "; 1 crowd region(s) (iscrowd 1) kept as single boxes" in out
    anns = json.loads((tmp_path / "out" / "annotations.json").read_text())["annotations"]
    assert [a["iscrowd"] for a in anns] == [0, 0] and len(
        CocoDetection(tmp_path / "out")[2].boxes
    ) == 1


def test_tianchi_drops_background_keeps_negatives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_source(src, tianchi=True)
    assert main(["import", "tianchi", str(src), "--out", str(tmp_path / "out"), "--json"]) == 0
    data = json.loads((tmp_path / "out" / "annotations.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in data["categories"]] == ["瓶盖破损", "标贴起皱"]
    assert len(data["images"]) == 4
    assert sorted(a["id"] for a in data["annotations"]) == [1, 4]
    ds = CocoDetection(tmp_path / "out")
    assert [len(ds[i].boxes) for i in range(4)] == [1, 0, 1, 0]


def _edit(fn: Callable[[dict], None]) -> Callable[[Path, dict], None]:
    def apply(src: Path, data: dict) -> None:
        d = copy.deepcopy(data)
        fn(d)
        (src / "annotations.json").write_text(json.dumps(d), encoding="utf-8")

    return apply


def _not_json(src: Path, data: dict) -> None:
    (src / "annotations.json").write_text("{ this is not json", encoding="utf-8")


def _missing_image(src: Path, data: dict) -> None:
    (src / "images" / "img_2.jpg").unlink()


def _unreadable_image(src: Path, data: dict) -> None:
    (src / "images" / "img_3.jpg").write_bytes(b"\x00garbage, not a JPEG" * 10)


def _cut_short(src: Path, data: dict) -> None:
    jpeg = src / "images" / "img_1.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:5000])  # OpenCV's imread decodes it, the rest grey


def _wrong_size(src: Path, data: dict) -> None:
    cv2.imwrite(str(src / "images" / "img_0.jpg"), np.zeros((100, 100, 3), np.uint8))


CASES = {
    "not_json": (_not_json, "annotations.json", "not valid JSON"),
    "missing_top_key": (
        _edit(lambda d: d.pop("categories")),
        "annotations.json",
        "missing top-level key 'categories'",
    ),
    "missing_record_key": (
        _edit(lambda d: d["annotations"][1].pop("bbox")),
        "annotations.json",
        "annotation #1 (id 2): missing key 'bbox'",
    ),
    "duplicate_image_id": (
        _edit(lambda d: d["images"][2].update(id=1)),
        "annotations.json",
        "image #2 (id 1): duplicate image id 1",
    ),
    "duplicate_annotation_id": (
        _edit(lambda d: d["annotations"][1].update(id=1)),
        "annotations.json",
        "annotation #1 (id 1): duplicate annotation id 1",
    ),
    "duplicate_category_id": (
        _edit(lambda d: d["categories"].append({"id": 1, "name": "x"})),
        "annotations.json",
        "duplicate category id 1",
    ),
    "unknown_category": (
        _edit(lambda d: d["annotations"][0].update(category_id=9)),
        "annotations.json",
        "annotation #0 (id 1): unknown category_id 9",
    ),
    "unknown_image": (
        _edit(lambda d: d["annotations"][0].update(image_id=99)),
        "annotations.json",
        "annotation #0 (id 1): unknown image_id 99",
    ),
    "box_outside": (
        _edit(lambda d: d["annotations"][1].update(bbox=[480, 100, 30, 6])),
        "annotations.json",
        "annotation #1 (id 2): bbox [480, 100, 30, 6] outside image 3",
    ),
    "image_missing": (_missing_image, "img_2.jpg", "image id 3: image file missing"),
    "image_unreadable": (_unreadable_image, "img_3.jpg", "image id 4: image file unreadable"),
    "image_cut_short": (
        _cut_short,
        "img_1.jpg",
        "image id 2: image file unreadable (a JPEG cut short, without its end-of-image marker",
    ),
    "image_wrong_size": (_wrong_size, "img_0.jpg", "annotations say 300x410"),
}


@pytest.mark.parametrize("fmt", ["coco", "tianchi"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, fmt: str
) -> None:
    src = tmp_path / "src"
    data = _make_source(src, tianchi=fmt == "tianchi")
    breaker, where, message = CASES[case]
    if fmt == "tianchi" and case == "box_outside":
        message = "annotation #1 (id 2): bbox [480, 100, 30, 6] outside image 1"
    if fmt == "tianchi" and case == "missing_record_key":
        message = "annotation #1 (id 2): missing key 'bbox'"
    breaker(src, data)
    out = tmp_path / "out"
    assert main(["import", fmt, str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert where in err[0] and message in err[0], err[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no temp folder either


def test_tianchi_without_background_category(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    _make_source(src)
    assert main(["import", "tianchi", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "背景" in capsys.readouterr().err


def test_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", "coco", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _prefix_file_names(src: Path, prefix: str) -> None:
    """Rewrite file_names as `prefix + name`, as exporters that list `images/x.jpg` do."""
    ann = src / "annotations.json"
    data = json.loads(ann.read_text(encoding="utf-8"))
    for rec in data["images"]:
        rec["file_name"] = prefix + rec["file_name"]
    ann.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def test_file_names_relative_to_the_json_folder(tmp_path: Path) -> None:
    # Label Studio's COCO export: result.json beside images/, file_names "images/x.jpg".
    src = tmp_path / "src"
    _make_source(src)
    _prefix_file_names(src, "images/")
    (src / "annotations.json").rename(src / "result.json")
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 0
    ds = CocoDetection(tmp_path / "out")
    assert len(ds) == 4
    assert ds[0].image.shape == (410, 300, 3)
    np.testing.assert_allclose(ds[0].boxes, [[10, 20, 40, 60]])


def test_a_missing_file_is_named_where_the_others_are(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "src"
    _make_source(src)
    _prefix_file_names(src, "images/")
    (src / "images" / "img_2.jpg").unlink()
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{src / 'images' / 'img_2.jpg'}: image id 3: image file missing" in err, err
    assert not (tmp_path / "out").exists()


def test_a_backslash_path_is_pointed_out(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "src"
    _make_source(src)
    _prefix_file_names(src, "images\\")
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "file_name holds a backslash: write paths with /" in capsys.readouterr().err


def test_a_source_not_yet_imported_is_pointed_to_fod_import(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_source(src)
    (src / "annotations.json").rename(src / "result.json")
    with pytest.raises(DataError, match=r"not a set in this package's layout.*fod import coco"):
        CocoDetection(src)


def test_a_16_bit_image_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # A 12-bit camera's frame saved in 16 bits: read as 8 bits (value / 256) it trains black.
    src = tmp_path / "src"
    data = _make_source(src)
    rec = data["images"][1]
    rec["file_name"] = "img_1.png"
    mono12 = np.random.default_rng(1).integers(0, 4096, (rec["height"], rec["width"]))
    cv2.imwrite(str(src / "images" / "img_1.png"), mono12.astype(np.uint16))
    (src / "annotations.json").write_text(json.dumps(data), encoding="utf-8")
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "img_1.png: image id 2: a uint16 image (largest value" in err, err
    assert "write the set as 8-bit images" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_read_rgb_refuses_a_16_bit_image_and_reads_8_bit_ones(tmp_path: Path) -> None:
    from training.data.dataset import read_rgb  # training, calibration and heatmaps read so

    grey = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g8.png"), grey)
    np.testing.assert_array_equal(read_rgb(tmp_path / "g8.png"), np.dstack([grey] * 3))
    cv2.imwrite(str(tmp_path / "g16.png"), grey.astype(np.uint16) * 16)
    with pytest.raises(DataError, match=r"g16.png: a uint16 image \(largest value 40\d\d\)"):
        read_rgb(tmp_path / "g16.png")


def test_read_rgb_refuses_a_jpeg_cut_short_and_reads_whole_ones(tmp_path: Path) -> None:
    from training.data.dataset import read_rgb

    img = np.zeros((64, 96, 3), np.uint8)
    cv2.circle(img, (40, 30), 12, (40, 200, 90), -1)
    for name, params in (("base", []), ("progressive", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])):
        data = cv2.imencode(".jpg", img, params)[1].tobytes()
        (tmp_path / f"{name}.jpg").write_bytes(data)
        whole = read_rgb(tmp_path / f"{name}.jpg")
        assert whole.shape == (64, 96, 3) and whole[30, 40, 1] > 150
        # Bytes after the end-of-image marker (a camera's trailer) leave the image whole.
        (tmp_path / f"{name}-trailer.jpg").write_bytes(data + b"\xff\xd8trailer")
        np.testing.assert_array_equal(read_rgb(tmp_path / f"{name}-trailer.jpg"), whole)
        for keep in (len(data) // 2, len(data) - 2):
            (tmp_path / "cut.jpg").write_bytes(data[:keep])
            assert cv2.imread(str(tmp_path / "cut.jpg")) is not None  # what imread would take
            with pytest.raises(DataError, match=r"cut.jpg: a JPEG cut short"):
                read_rgb(tmp_path / "cut.jpg")
    with pytest.raises(DataError, match=r"gone.png: No such file or directory"):
        read_rgb(tmp_path / "gone.png")
