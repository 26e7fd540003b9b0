"""benchmarks/int8_kernels.py: ONNX Runtime's integer INT8 kernels against the exact ones
on a set's frames (whether `int8_kernels = "auto"` may keep the fast path on a CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edge.postprocess import Detections
from fod.cli import main as fod

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def kernels():
    spec = importlib.util.spec_from_file_location(
        "int8_kernels", ROOT / "benchmarks" / "int8_kernels.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dets(rows) -> Detections:
    a = np.asarray(rows, np.float32).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))


def test_box_iou_and_agreement_by_hand(kernels) -> None:
    iou = kernels.iou_matrix(np.array([[0, 0, 10, 10]], float), np.array([[5, 0, 15, 10]], float))
    assert iou[0, 0] == pytest.approx(50 / 150)
    x = _dets([[0, 0, 10, 10, 0.9, 1], [20, 20, 30, 30, 0.8, 0], [40, 40, 50, 50, 0.3, 2]])
    y = _dets([[1, 1, 10, 10, 0.7, 1], [20, 20, 30, 30, 0.6, 2], [60, 60, 70, 70, 0.55, 0]])
    # x's first matches y's first; x's second has y's box but another class; x's third is
    # under the score; y's third stands alone.
    assert kernels.agreement(x, y, 0.5) == {"both": 1, "first_only": 1, "second_only": 2}
    assert kernels.agreement(x, _dets([]), 0.5) == {"both": 0, "first_only": 2, "second_only": 0}


@pytest.mark.skipif(not DEMO.exists(), reason="no models/demo in this tree")
def test_demo_bundle_on_a_small_set(kernels, bundle: Path, tmp_path: Path, capsys) -> None:
    seq = tmp_path / "seq"
    args = ["synth", "--out", str(seq), "--images", "0", "--sequences", "2", "--frames", "2"]
    assert fod([*args, "--size", "640x384", "--seed", "3", "--workers", "1"]) == 0
    out = tmp_path / "k.json"
    assert kernels.main(["--bundle", str(DEMO), "--sequences", str(seq), "--json", str(out)]) == 0
    row = json.loads(out.read_text())["sets"][0]
    assert row["frames"] == 4 and set(row["top_score_diff"]) == {"median", "p99", "max"}
    assert "integer only" in capsys.readouterr().out
    # A bundle without a Q/DQ model has nothing to compare: refused, named.
    assert kernels.main(["--bundle", str(bundle), "--sequences", str(seq)]) == 1
    assert "no Q/DQ INT8 model" in capsys.readouterr().err
