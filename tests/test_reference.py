"""Reference frames: a bundle carries images with known objects, and the unit's backend must
find them before `fod check` passes, `fod run` starts or a rollout switches. A blind engine
(an INT8 calibration gone wrong, a precision bug) gives outputs that pass every health
check and would accept every container."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.config import CameraConfig, LineConfig, ModelConfig
from edge.errors import FodError
from edge.postprocess import Detections
from edge.preflight import FAIL
from edge.reference import (
    Reference,
    Rule,
    check_reference,
    class_needed,
    iou_matrix,
    load_reference,
    needed,
    reference_meta,
    reference_rule,
    save_reference,
    sightings,
)
from fod.cli import main

BOXES = np.float32([[10, 10, 20, 20], [40, 40, 46, 50], [5, 5, 9, 9]])  # [3, 4]


REF = Reference(np.zeros((2, 32, 64), np.uint8), BOXES, np.int64([0, 0, 1]))


def _scripted(per_image: List[List[List[float]]]):
    """detect() answering image i with per_image[i]: rows [x1, y1, x2, y2, score(, class)]
    (class 0 where not given)."""
    calls = iter(per_image)

    def detect(frames) -> List[Detections]:
        rows = [r if len(r) == 6 else [*r, 0] for r in next(calls)]
        a = np.float32(rows).reshape(-1, 6)
        return [Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))]

    return detect


def test_found_objects_by_hand() -> None:
    assert iou_matrix(BOXES[:1], np.float32([[15, 10, 25, 20]]))[0, 0] == pytest.approx(50 / 150)
    detect = _scripted(
        [
            [[15, 10, 25, 20, 0.9], [40, 40, 46, 50, 0.4]],  # IoU 1/3: found; the 2nd unsure
            [[5, 5, 9, 9, 0.5]],  # exact, at the score: found
        ]
    )
    assert sightings(detect, REF).tolist() == [1, 0, 1]  # no labels: found by any class
    assert [needed(n) for n in (1, 2, 5, 10, 19)] == [1, 1, 4, 8, 15]
    rule = reference_rule({"found": 3, "measured_with": "onnxruntime int8_cpu"}, REF, [], "r")
    with pytest.raises(FodError, match=r"blind to its reference frames: found 1 of 3 .* 2 needed"):
        check_reference(_scripted([[[15, 10, 25, 20, 0.9]], []]), REF, rule, (32, 64), "r.npz")
    line = check_reference(
        _scripted([[[15, 10, 25, 20, 0.9]], []]), REF, Rule(1, "the maker"), (32, 64), "r"
    )
    assert line.startswith("found 1 of 3 reference objects (1 by the maker")
    with pytest.raises(FodError, match=r"reference frames are \(32, 64\), the model takes"):
        check_reference(_scripted([]), REF, rule, (32, 64, 3), "r.npz")


LABELLED = dataclasses.replace(REF, labels=np.int64([0, 1, 1]))  # a fibre, two particles


NAMES = ["fiber", "particle"]


def test_each_class_must_be_found_as_itself_by_hand() -> None:
    """With labelled objects the maker records, per class, the objects found as that class,
    and the unit must find CLASS_SHARE of those (classes under CLASS_MIN: the total only).
    An engine blind to one class - another class's detection on that object still counts
    in the total - fails on that class alone."""
    assert [class_needed(n) for n in (0, 1, 2, 3, 5, 8)] == [0, 0, 1, 1, 2, 4]
    all_found = [  # image 0: the fibre as a fibre, particle 1 as a fibre; image 1: as itself
        [[10, 10, 20, 20, 0.9, 0], [40, 40, 46, 50, 0.8, 0]],
        [[5, 5, 9, 9, 0.7, 1]],
    ]
    seen = sightings(_scripted(all_found), LABELLED)
    assert seen.tolist() == [2, 1, 2]  # own class, another class, own class
    meta = reference_meta(LABELLED, seen, "maker", 2)
    assert meta["found"] == 3 and meta["found_by_class"] == [1, 1]
    meta["found_by_class"] = [2, 2]  # judged with a maker that found two of each as itself
    with pytest.raises(FodError, match="found_by_class must be 2 counts"):
        reference_rule(meta, LABELLED, NAMES, "r")  # 4 > found: counted some objects twice
    meta["found"] = 4
    rule = reference_rule(meta, LABELLED, NAMES, "r")
    assert rule == Rule(4, "maker", (2, 2), ("fiber", "particle"))
    ok, line = rule.judge(seen, LABELLED)
    assert ok and line.endswith("found/the maker's: fiber 1/2 (>= 1), particle 1/2 (>= 1)")
    blind_to_particles = [
        [[10, 10, 20, 20, 0.9, 0], [40, 40, 46, 50, 0.8, 0]],
        [[5, 5, 9, 9, 0.7, 0]],
    ]
    ok, line = rule.judge(sightings(_scripted(blind_to_particles), LABELLED), LABELLED)
    assert (
        not ok
        and "found 3 of 3" in line
        and line.endswith("particle 0/2 (>= 1); blind to particle")
    )
    with pytest.raises(FodError, match=r"blind to its reference frames: .* blind to particle"):
        check_reference(_scripted(blind_to_particles), LABELLED, rule, (32, 64), "r")
    # The file and the manifest must agree: counts per class need the objects' classes.
    with pytest.raises(FodError, match="r: the reference objects need labels of the model's 2"):
        reference_rule(meta, REF, NAMES, "r")
    with pytest.raises(FodError, match="must be 2 counts"):
        reference_rule({**meta, "found_by_class": [1, 1, 1]}, LABELLED, NAMES, "r")
    # A bundle made before per-class counts: judged in the total, as it was.
    assert reference_rule({"found": 3}, LABELLED, NAMES, "r") == Rule(3, "the maker")


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


def _line(bundle: Path, **camera) -> LineConfig:
    return LineConfig(
        camera=CameraConfig(mono=True, **camera),
        model=ModelConfig(bundle=str(bundle), allow_unsigned=True),
    )


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
