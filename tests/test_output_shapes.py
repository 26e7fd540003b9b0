"""A backend whose outputs do not have the model's shape (fewer anchors, another class
count, a missing image), or outputs no trained model gives (a buffer never written, a dead
head, boxes inside out or off the input), is a bad output - a reject - never a frame with
nothing in it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.health import BadOutput, StaleOutputs, check_outputs, check_shapes
from edge.model_info import ModelInfo

from .gate_run import _spoil_call, _two_containers
from .quiet import quiet_outputs
from .test_runtime import _cfg

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


@pytest.mark.parametrize(
    "spoil, match",
    [
        (lambda b, s: (np.zeros_like(b), np.zeros_like(s)), "every box coordinate is 0"),
        (lambda b, s: (b, np.full_like(s, 0.02)), "every score is 0.02"),
        (lambda b, s: (b[..., [2, 3, 0, 1]], s), "inverted boxes"),
        (lambda b, s: (b * 1e30, s), "outside the 64x32 model input"),
        (lambda b, s: (b - 1e4, s), "outside the 64x32 model input"),
        (lambda b, s: (b + np.float32([0, 32, 0, 32]), s), "1 px outside"),  # y to 33
    ],
    ids=["zero-buffer", "dead-head", "inverted", "scaled", "shifted", "below"],
)
def test_dead_inverted_or_off_input_outputs_are_bad(spoil, match) -> None:
    boxes, scores = quiet_outputs(2, 40, 3)  # x 0..41, y 0..1
    wh = INFO.input_size  # 64x32
    check_outputs(boxes, scores, wh)  # a healthy model's quiet frame passes
    check_outputs(*quiet_outputs(1, 1, 3), wh)  # one anchor: still boxes and scores that differ
    # Up to x 63.5 .. 64.5 and y 32.5: within the slack.
    edge = boxes + np.float32([0, 30.5, 22.5, 30.5])
    check_outputs(edge, scores, wh)
    with pytest.raises(BadOutput, match=match):
        check_outputs(*spoil(boxes, scores), wh)
    bad_b, bad_s = spoil(boxes, scores)  # the second image alone spoiled fails the call too
    with pytest.raises(BadOutput, match=match):
        check_outputs(
            np.concatenate([boxes[:1], bad_b[1:]]), np.concatenate([scores[:1], bad_s[1:]]), wh
        )


@pytest.mark.parametrize(
    "spoil, match",
    [
        (lambda b, s: (np.zeros_like(b), np.zeros_like(s)), "every box coordinate is 0"),
        # Every box turned inside out and scored sure: each would fall under min_size.
        (lambda b, s: (b[..., [2, 3, 0, 1]], np.where(s == s.max(), 0.95, s)), "inverted"),
        # Every box shifted far off the input: tracks that sit nowhere on the frame.
        (lambda b, s: (b + 1e4, s), "outside the 320x256 model input"),
    ],
    ids=["zero-buffer", "inverted", "off-input"],
)
def test_a_dead_inverted_or_off_input_output_rejects_the_container_at_the_gate(
    bundle: Path, tmp_path: Path, spoil, match
):
    """Through the runtime (real ONNX Runtime, MockFactory pins, a decision that accepts
    whatever the model sees): a backend whose second call hands back an unwritten (all
    zero) buffer, or its boxes inside out or off the input, rejects that container - no
    pulse on the gate, audited as a bad output - and the next container is accepted and
    pulsed."""
    wrap, _ = _spoil_call(2, spoil)
    cfg = _cfg(bundle, tmp_path, gpio={"delay_ms": 5000}, decision={"min_evidence": 99.0})
    rows, states = _two_containers(cfg, wrap, (256, 320, 3))
    assert rows["c0"][:2] == ("reject", "bad_output") and match in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)
    assert states == [False, True, False]  # off, then one pulse: c1's; none for c0


def test_stale_outputs_for_another_image_are_bad() -> None:
    boxes, scores = quiet_outputs(3, 40, 3)
    images = np.arange(3 * 8, dtype=np.uint8).reshape(3, 8)  # three different images
    watch = StaleOutputs()
    fresh = scores * np.float32([[[1.0]], [[1.1]], [[1.2]]])  # each image its own outputs
    watch.check(images, boxes, fresh)
    watch.check(images[:1], boxes[:1], fresh[:1])  # the same image again: the same outputs
    with pytest.raises(BadOutput, match="stale output"):  # within one call
        StaleOutputs().check(images, boxes, scores)
    watch = StaleOutputs()
    watch.check(images[:1], boxes[:1], fresh[:1])
    with pytest.raises(BadOutput, match="stale output"):  # across calls
        watch.check(images[1:2], boxes[:1], fresh[:1])
    # Equal scores with other boxes (or the reverse) are a model's, not a repeat.
    StaleOutputs().check(images[:2], np.stack([boxes[0], boxes[0] + 1]), scores[:2])
    StaleOutputs().check(images[:2], boxes[:2], fresh[:2])


@pytest.mark.parametrize("stuck", [False, True], ids=["healthy", "stuck"])
def test_a_backend_that_stops_running_cannot_hide_a_particle(
    bundle: Path, tmp_path: Path, stuck: bool
):
    """Through the runtime (real ONNX Runtime, MockFactory pins, today's decision): c0's
    frames show nothing, c1's a particle sinking 10 px a frame. A backend that stops
    running after c0 and hands back c0's last outputs for every frame of c1 (its buffers
    never written again) would show c1 as clean as c0 and pulse it through; it is a bad
    output instead - no pulse for c1, the stale output audited. Healthy, c1 is rejected by
    its particle's path."""
    calls = {"n": 0}

    def wrap(be):
        class Scripted:
            last = None

            def infer(self, images):
                calls["n"] += 1
                if stuck and calls["n"] > 3:  # c1's frames: c0's last outputs again
                    return self.last[0].copy(), self.last[1].copy()
                boxes, raw = be.infer(images)
                boxes, scores = boxes.copy(), quiet_outputs(*raw.shape)[1]
                if calls["n"] > 3:  # c1: a particle at 40 + 10 k px
                    k = 10.0 * (calls["n"] - 4)
                    scores[:, 0, 1] = 0.9
                    boxes[:, 0] = [40 + k, 40 + k, 48 + k, 48 + k]
                self.last = (boxes, scores)
                return boxes, scores

        return Scripted()

    rows, states = _two_containers(
        _cfg(bundle, tmp_path, gpio={"delay_ms": 5000}), wrap, (256, 320, 3)
    )
    assert rows["c0"][:2] == ("accept", None)
    if stuck:
        assert rows["c1"][:2] == ("reject", "bad_output") and "stale output" in rows["c1"][2]
    else:
        assert rows["c1"][:2] == ("reject", None) and "moving particle" in rows["c1"][2]
    assert states == [False, True, False]  # off, then one pulse: c0's; none for c1
