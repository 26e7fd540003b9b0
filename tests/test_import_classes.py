"""`fod import --classes`: a set's categories in a model's order, by name; where a model and
a set differ only in order, the refusal names the import that fixes it, and that import
does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fod.cli import main
from training.data.dataset import CocoDetection

from .test_import import _make_source  # 4 images; fiber (id 1) on image 1, particle (id 2) on 3


def _import(src: Path, out: Path, classes: str) -> int:
    return main(["import", "coco", str(src), "--out", str(out), "--classes", classes])


def test_classes_reorder_the_categories_by_name(tmp_path: Path) -> None:
    _make_source(tmp_path / "src")
    assert _import(tmp_path / "src", tmp_path / "out", "particle, fiber") == 0
    ds = CocoDetection(tmp_path / "out")
    assert ds.class_names == ["particle", "fiber"]
    by_id = {ds[i].image_id: ds[i] for i in range(len(ds))}
    assert by_id[1].labels.tolist() == [1]  # the fibre is still a fibre
    np.testing.assert_allclose(by_id[1].boxes, [[10, 20, 40, 60]])
    assert by_id[3].labels.tolist() == [0]
    cats = json.loads((tmp_path / "out" / "annotations.json").read_text())["categories"]
    assert cats == [{"id": 2, "name": "particle"}, {"id": 1, "name": "fiber"}]  # ids kept


def test_a_class_the_set_lacks_is_added_without_boxes(tmp_path: Path, capsys) -> None:
    _make_source(tmp_path / "src")
    assert _import(tmp_path / "src", tmp_path / "out", "fiber,particle,glass_flake") == 0
    ds = CocoDetection(tmp_path / "out")
    assert ds.class_names == ["fiber", "particle", "glass_flake"]
    assert [c.id for c in ds.coco.categories] == [1, 2, 3] and ds.coco.num_annotations == 2
    assert "2 boxes in 3 categories" in capsys.readouterr().out


def test_a_category_without_boxes_may_be_left_out(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _make_source(src)
    data = json.loads((src / "annotations.json").read_text())
    data["categories"].append({"id": 7, "name": "label_nobody_used"})
    (src / "annotations.json").write_text(json.dumps(data))
    assert _import(src, tmp_path / "out", "fiber,particle") == 0
    assert CocoDetection(tmp_path / "out").class_names == ["fiber", "particle"]


@pytest.mark.parametrize(
    "classes, message",
    [
        ("fiber", "category 'particle' (1 box) is not in --classes fiber"),
        ("fiber,fiber,particle", "comma-separated class names, each once"),
        ("fiber,,particle", "comma-separated class names, each once"),
    ],
)
def test_bad_classes_exit_2_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture, classes: str, message: str
) -> None:
    _make_source(tmp_path / "src")
    try:
        rc = _import(tmp_path / "src", tmp_path / "out", classes)
    except SystemExit as e:  # argparse refuses the list itself
        rc = e.code
    assert rc == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_a_set_in_another_order_is_refused_with_the_import_that_fixes_it(
    exported, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ckpt = exported[2]  # trained on fiber, particle, glass_flake
    assert CocoDetection(small_set).class_names == ["fiber", "particle", "glass_flake"]
    assert _import(small_set, tmp_path / "shuffled", "glass_flake,fiber,particle") == 0
    capsys.readouterr()
    evaluate = ["eval", "--weights", str(ckpt), "--size", "320x256", "--json", "--data"]
    assert main([*evaluate, str(tmp_path / "shuffled")]) == 2
    err = capsys.readouterr().err
    fix = "`fod import coco SRC --out DIR --classes fiber,particle,glass_flake`"
    assert fix in err, err
    # The import it names, from the shuffled set, gives a set the model evaluates on.
    assert _import(tmp_path / "shuffled", tmp_path / "fixed", "fiber,particle,glass_flake") == 0
    capsys.readouterr()
    assert main([*evaluate, str(tmp_path / "fixed")]) == 0
    fixed = json.loads(capsys.readouterr().out)
    assert main([*evaluate, str(small_set)]) == 0
    assert fixed == json.loads(capsys.readouterr().out)  # the same boxes, the same classes


def test_calibrate_refuses_a_val_set_of_other_classes_before_its_pass(
    exported, small_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The FP32-vs-INT8 metrics need --val in the model's classes: refused before the
    calibration pass (minutes at 1280x800), not after it."""
    import calibration.quantize

    assert _import(small_set, tmp_path / "shuffled", "glass_flake,fiber,particle") == 0
    capsys.readouterr()

    def no_pass(*args, **kwargs):
        raise AssertionError("the calibration pass ran")

    monkeypatch.setattr(calibration.quantize, "quantize_qdq", no_pass)
    out = tmp_path / "int8"
    argv = ["calibrate", "--onnx", str(exported[3]), "--data", str(small_set), "--out", str(out)]
    assert main([*argv, "--val", str(tmp_path / "shuffled"), "--images", "4"]) == 2
    err = capsys.readouterr().err
    assert "classes ['fiber', 'particle', 'glass_flake'] differ from" in err, err
    assert "--classes fiber,particle,glass_flake" in err and not out.exists()
