"""Reference frames: a bundle carries images with known objects, and the unit's backend must
find them before `fod check` passes, `fod run` starts or a rollout switches. A blind engine
(an INT8 calibration gone wrong, a precision bug) gives outputs that pass every health
check and would accept every container."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import open_bundle
from edge.config import CameraConfig, LineConfig, ModelConfig
from edge.errors import FodError
from edge.postprocess import Detections
from edge.preflight import FAIL, OK, check_model
from edge.reference import (
    Reference,
    check_reference,
    found_objects,
    iou_matrix,
    load_reference,
    needed,
    save_reference,
)
from fod.cli import main
from fod.line import DEMO_BUNDLE

BOXES = np.float32([[10, 10, 20, 20], [40, 40, 46, 50], [5, 5, 9, 9]])  # [3, 4]
REF = Reference(np.zeros((2, 32, 64), np.uint8), BOXES, np.int64([0, 0, 1]))


def _scripted(per_image: List[List[List[float]]]):
    """detect() answering image i with per_image[i]: rows [x1, y1, x2, y2, score]."""
    calls = iter(per_image)

    def detect(frames) -> List[Detections]:
        rows = np.float32(next(calls)).reshape(-1, 5)
        return [Detections(rows[:, :4], rows[:, 4], np.zeros(len(rows), np.int64))]

    return detect


def test_found_objects_by_hand() -> None:
    assert iou_matrix(BOXES[:1], np.float32([[15, 10, 25, 20]]))[0, 0] == pytest.approx(50 / 150)
    detect = _scripted(
        [
            [[15, 10, 25, 20, 0.9], [40, 40, 46, 50, 0.4]],  # IoU 1/3: found; the 2nd unsure
            [[5, 5, 9, 9, 0.5]],  # exact, at the score: found
        ]
    )
    assert found_objects(detect, REF) == 2
    assert [needed(n) for n in (1, 2, 5, 10, 19)] == [1, 1, 4, 8, 15]
    meta = {"found": 3, "measured_with": "onnxruntime int8_cpu"}
    with pytest.raises(FodError, match=r"blind to its reference frames: found 1 of 3 .* 2 needed"):
        check_reference(_scripted([[[15, 10, 25, 20, 0.9]], []]), REF, meta, (32, 64), "r.npz")
    line = check_reference(
        _scripted([[[15, 10, 25, 20, 0.9]], []]), REF, {"found": 1}, (32, 64), "r"
    )
    assert line.startswith("found 1 of 3 reference objects (1 by the maker")
    with pytest.raises(FodError, match=r"reference frames are \(32, 64\), the model takes"):
        check_reference(_scripted([]), REF, meta, (32, 64, 3), "r.npz")


def test_a_reference_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "reference.npz"
    save_reference(path, REF)
    back = load_reference(path)
    assert np.array_equal(back.boxes, REF.boxes) and back.images.shape == (2, 32, 64)
    path.write_bytes(b"not an npz")
    with pytest.raises(FodError, match=f"{path}: not a reference frame file"):
        load_reference(path)
    for bad, match in [
        (Reference(REF.images.astype(np.float32), BOXES, REF.image_of), "uint8"),
        (Reference(REF.images, BOXES, np.int64([0, 0, 2])), "must index the 2 images"),
        (Reference(REF.images, BOXES * np.nan, REF.image_of), "finite"),
    ]:
        save_reference(path, bad)
        with pytest.raises(FodError, match=match):
            load_reference(path)


@pytest.fixture(scope="module")
def ref_bundle(tmp_path_factory) -> Path:
    """The demo's INT8-CPU model bundled with 4 reference frames of fresh `random` images."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    work = tmp_path_factory.mktemp("ref")
    argv = ["synth", "--out", str(work / "set"), "--images", "8", "--sequences", "0"]
    assert main([*argv, "--size", "640x384", "--seed", "77", "--look", "random"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        model = b.file("int8_cpu")
        argv = ["bundle", "make", "--int8-cpu", str(model), "--out", str(work / "b")]
        assert main([*argv, "--reference", str(work / "set"), "--reference-images", "4"]) == 0
    return work / "b"


def _line(bundle: Path, **camera) -> LineConfig:
    return LineConfig(
        camera=CameraConfig(mono=True, **camera),
        model=ModelConfig(bundle=str(bundle), allow_unsigned=True),
    )


def test_the_bundle_records_what_its_model_found_and_the_unit_finds_it(ref_bundle) -> None:
    meta = json.loads((ref_bundle / "manifest.json").read_text())["reference"]
    assert meta["images"] == 4 and 1 <= meta["found"] <= meta["objects"]
    assert meta["measured_with"].startswith("onnxruntime int8_cpu")
    c = check_model(_line(ref_bundle))
    assert c.status == OK and f"reference objects ({meta['found']} by onnxruntime" in c.detail


@pytest.fixture
def blind_engine(monkeypatch) -> None:
    """The unit's engine miscalibrated: every score a fifth of the model's - finite,
    distinct, in [0, 1], boxes in place: outputs no health check can tell from a frame
    with nothing in it."""
    run = OnnxRuntimeBackend.run

    def dim(self, x):
        boxes, scores = run(self, x)
        return boxes, scores * np.float32(0.2)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", dim)


def test_a_blind_engine_fails_the_check_and_never_runs_the_line(
    ref_bundle, blind_engine, tmp_path: Path, capsys
) -> None:
    cam = tmp_path / "cam"
    cam.mkdir()
    cv2.imwrite(str(cam / "0.png"), np.full((384, 640), 128, np.uint8))
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{cam}"\nmono = true\n'
        f'[model]\nbundle = "{ref_bundle}"\nallow_unsigned = true\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\n'
        '[gpio]\npin_factory = "mock"\ntrigger_pin = "GPIO22"\n'
    )
    run = [
        "run",
        "--config",
        str(cfg),
        "--allow-mock-pins",
        "--rate",
        "60",
        "--max-containers",
        "1",
    ]
    assert main(run) == 2
    assert "blind to its reference frames" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()  # no container decided, no pin claimed
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    model = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "model")
    assert (
        model["status"] == FAIL and "blind to its reference frames: found 0 of" in model["detail"]
    )


def test_bundle_make_refuses_reference_frames_it_cannot_use(tmp_path: Path, capsys):
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    small = tmp_path / "small"
    argv = ["synth", "--out", str(small), "--images", "6", "--sequences", "0", "--seed", "77"]
    assert main([*argv, "--size", "320x256"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        argv = [
            "bundle",
            "make",
            "--int8-cpu",
            str(b.file("int8_cpu")),
            "--out",
            str(tmp_path / "b"),
        ]
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert ".png: is (256, 320), the model takes frames of (384, 640)" in err
        ann = json.loads((small / "annotations.json").read_text())
        ann["annotations"][0]["bbox"][2] = float("nan")
        (small / "annotations.json").write_text(json.dumps(ann))
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert "annotations.json: annotation" in err and "holds a non-finite number" in err
    assert not (tmp_path / "b").exists()
