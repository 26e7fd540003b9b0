"""A backend whose outputs do not have the model's shape (fewer anchors, another class
count, a missing image) is a bad output - a reject - never a frame with nothing in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.health import BadOutput, check_shapes
from edge.model_info import ModelInfo

from .gate_run import _spoil_call, _two_containers
from .test_export import exported  # noqa: F401
from .test_runtime import _cfg, bundle  # noqa: F401

INFO = ModelInfo(["fiber", "particle", "glass_flake"], (64, 32), [32, 8], "0" * 64, "t")


@pytest.mark.parametrize(
    "boxes, scores",
    [
        ((2, 30, 4), (2, 30, 3)),  # the last level's anchors missing
        ((2, 0, 4), (2, 0, 3)),  # nothing at all: must not read as "no particle"
        ((2, 40, 4), (2, 40, 2)),  # a class short
        ((1, 40, 4), (1, 40, 3)),  # one image of two
        ((2, 40, 4), (2, 41, 3)),  # boxes and scores disagree
    ],
)
def test_outputs_of_another_shape_are_bad(boxes, scores) -> None:
    with pytest.raises(BadOutput, match=r"expected \(2, 40, 4\) and \(2, 40, 3\)"):
        check_shapes(np.zeros(boxes, np.float32), np.zeros(scores, np.float32), 2, INFO)
    check_shapes(np.zeros((2, 40, 4), np.float32), np.zeros((2, 40, 3), np.float32), 2, INFO)


def test_a_backend_that_drops_anchors_rejects_the_container_at_the_gate(
    bundle: Path, tmp_path: Path
):
    """Through the runtime (real ONNX Runtime, MockFactory pins, a decision that accepts
    whatever the model sees: min_evidence 99): a backend that hands back only its first 100
    anchor points on the second call - every score of them 0, a frame that would read as
    clean - rejects that container with no pulse on the gate, audited as a bad output; the
    next container, whole outputs again, is accepted and pulsed."""
    wrap, _ = _spoil_call(2, lambda boxes, scores: (boxes[:, :100], np.zeros_like(scores[:, :100])))
    cfg = _cfg(bundle, tmp_path, gpio={"delay_ms": 5000}, decision={"min_evidence": 99.0})
    rows, states = _two_containers(cfg, wrap, (256, 320, 3))
    assert rows["c0"][:2] == ("reject", "bad_output")
    assert "expected (1, " in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)
    assert states == [False, True, False]  # off, then one pulse: c1's; none for c0
