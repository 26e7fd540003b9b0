"""`fod bundle make --reference`: which frames go into a bundle, what its models found of
them in all and per class, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest

import edge.model_info
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import open_bundle
from edge.preflight import OK, check_model
from edge.reference import PICK_PER_CLASS, pick_frames
from fod.cli import main
from fod.line import DEMO_BUNDLE

from .test_reference import _line


def test_pick_frames_covers_every_class_first() -> None:
    """Images bringing a class still short of PICK_PER_CLASS first, then the earliest
    others, in the set's order; the model runs only as far as needed."""
    assert PICK_PER_CLASS == 4
    found = [np.int64(x) for x in ([0, 0], [0, 0, 0], [], [1], [0], [2, 2, 2, 2], [1, 1, 1], [0])]
    read: List[int] = []

    def lazily():
        for i, f in enumerate(found):
            read.append(i)
            yield f

    # 0 and 1 bring fibres (4 by then), 2 nothing, 3 a particle, 4 only a fibre (enough of
    # those), 5 the flakes, 6 the particles: every class covered, reading stops at 6.
    assert pick_frames(lazily(), len(found), 8, 3) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert read == list(range(7))
    read.clear()
    assert pick_frames(lazily(), len(found), 5, 3) == [0, 1, 3, 5, 6]  # 2 and 4 left out
    assert pick_frames(iter(found), len(found), 3, 3) == [0, 1, 3]
    assert pick_frames(iter([np.int64([])] * 5), 5, 2, 3) == [0, 1]  # nothing found: earliest


def test_the_bundle_records_what_its_model_found_and_the_unit_finds_it(ref_bundle) -> None:
    meta = json.loads((ref_bundle / "manifest.json").read_text())["reference"]
    assert meta["images"] == 4 and 1 <= meta["found"] <= meta["objects"]
    assert meta["measured_with"].startswith("onnxruntime int8_cpu")
    c = check_model(_line(ref_bundle))
    assert c.status == OK and f"reference objects ({meta['found']} by onnxruntime" in c.detail


def test_bundle_make_counts_each_class_by_the_fewest_of_its_models(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A bundle with two models: the per-class counts are the fewest either model found as
    that class (a unit runs one of them), and a class found too rarely to be judged alone
    is named when the bundle is made. The second model here is the demo's, blind to glass
    flakes (their scores a fifth)."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    argv = ["synth", "--out", str(tmp_path / "set"), "--images", "8", "--sequences", "0"]
    assert main([*argv, "--size", "640x384", "--seed", "77", "--look", "random"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        model = b.file("int8_cpu")
        blind = tmp_path / "blind-to-flakes.onnx"
        blind.write_bytes(model.read_bytes())
        init, run = OnnxRuntimeBackend.__init__, OnnxRuntimeBackend.run

        def opened(self, path, *a, **k):
            init(self, path, *a, **k)
            self.dim = Path(path) == blind

        def dimmed(self, x):
            boxes, scores = run(self, x)
            if self.dim:
                scores = scores.copy()
                scores[:, :, 2] *= np.float32(0.2)
            return boxes, scores

        monkeypatch.setattr(OnnxRuntimeBackend, "__init__", opened)
        monkeypatch.setattr(OnnxRuntimeBackend, "run", dimmed)
        # The blind copy stands in for the bundle's FP32 model (the demo ships none).
        kind = edge.model_info.quantized_kind
        monkeypatch.setattr(
            edge.model_info,
            "quantized_kind",
            lambda data, source: "float" if source == str(blind) else kind(data, source),
        )
        argv = ["bundle", "make", "--int8-cpu", str(model), "--reference", str(tmp_path / "set")]
        assert main([*argv, "--reference-images", "4", "--out", str(tmp_path / "one")]) == 0
        assert "judged only in the total" not in capsys.readouterr().err
        assert (
            main(
                [
                    *argv,
                    "--reference-images",
                    "4",
                    "--onnx",
                    str(blind),
                    "--out",
                    str(tmp_path / "two"),
                ]
            )
            == 0
        )
        err = capsys.readouterr().err
    one, two = (
        json.loads((tmp_path / d / "manifest.json").read_text())["reference"]
        for d in ("one", "two")
    )
    assert one["found_by_class_of"] == ["int8_cpu"] and one["found_by_class"][2] >= 2
    assert two["found_by_class_of"] == ["int8_cpu", "fp32"] and two["found"] == one["found"]
    assert two["found_by_class"][:2] == one["found_by_class"][:2] and two["found_by_class"][2] == 0
    assert "glass_flake found as glass_flake 0 time(s) by the fewest of int8_cpu, fp32" in err


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
        ann["annotations"][0]["bbox"][2] = 3.0
        ann["categories"][1]["name"] = "dust"  # a set labelled for another model
        (small / "annotations.json").write_text(json.dumps(ann))
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert "annotations.json: categories ['dust'] are not the model's classes" in err
    assert not (tmp_path / "b").exists()
