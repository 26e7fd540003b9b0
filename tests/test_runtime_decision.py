"""The decision rule as the runtime applies it, judged by the ejector pin: the model's
outputs are scripted per frame (real ONNX Runtime underneath, MockFactory pins)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.runtime import Job

from .test_export import exported  # noqa: F401
from .test_runtime import _cfg, _frames, _rows, bundle  # noqa: F401


@pytest.mark.parametrize(
    "path, scores, pulse, words",
    [
        ("rising", (0.9, 0.9, 0.9), True, "rising: bubble"),
        ("sinking", (0.9, 0.9, 0.9), False, "moving particle"),
        # Seen sure once, then unsure (0.35, above track_threshold): its track still rejects.
        ("sinking", (0.9, 0.35, 0.35), False, "moving particle (20 px), seen in 3/3 frames"),
        # Unsure alone: a track of a share of the weight (unsure_weight 0.4): 3 x 1.5 x 0.4
        # = 1.8 falls short, 5 frames reach 3.0; a bubble seen unsure counts nothing.
        ("sinking", (0.35, 0.35, 0.35), True, "below evidence: particle track, moving"),
        ("sinking", (0.35,) * 5, False, "moving particle (40 px), unsure, seen in 5/5 frames"),
        ("rising", (0.35,) * 5, True, "rising: bubble (40 px), unsure"),
    ],
)
def test_track_path_decides_the_gate(
    bundle: Path, tmp_path: Path, path: str, scores: tuple, pulse: bool, words: str
) -> None:
    """The model's outputs are replaced by one `particle` per frame: climbing 10 px a frame (a
    bubble: accepted, the gate gets its pulse) or sinking (rejected: no pulse), at the given
    score per frame."""
    step = -10.0 if path == "rising" else 10.0
    calls = {"n": 0}

    def wrap(be):
        class Scripted:
            def infer(self, images):
                boxes, raw = be.infer(images)
                boxes, out = boxes.copy(), np.zeros_like(raw)
                y = 150.0 + step * calls["n"]
                out[:, 0, 1] = scores[calls["n"]]
                calls["n"] += 1
                boxes[:, 0] = [100.0, y, 106.0, y + 6.0]
                return boxes, out

        return Scripted()

    f = MockFactory()
    cfg = _cfg(bundle, tmp_path, camera={"frames": len(scores)})
    seen = []
    with line_runtime(cfg, f, wrap, seen.append) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames(len(scores))))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)  # every pulse due has fired
        states = [s.state for s in pin.states]
    assert seen[0].fault is None
    assert states == ([False, True, False] if pulse else [False])
    decision, fault, reason = _rows(tmp_path)["c0"]
    assert decision == ("accept" if pulse else "reject") and fault is None
    assert words in reason


@pytest.mark.parametrize(
    "steps, pulse, words",
    [
        # 25 px a frame at the reference height = 50 px of this camera: past match_distance
        ([(0, 25)] * 3, False, "moving particle (150 px), seen in 4/4 frames"),
        # A mark's box creeping 4 px = 8 px of this camera: past moving_distance (6)
        ([(1, 0), (1.5, 0), (1.5, 0)], True, "static: mark (8 px)"),
    ],
)
def test_decision_distances_scale_with_the_camera(
    bundle: Path, tmp_path: Path, steps: list, pulse: bool, words: str
) -> None:
    """Distances set for a 256-px-high frame (reference_height), on a 512-px-high camera
    letterboxed into the 320x256 model: a fast particle stays one track (rejected: no
    pulse) and a creeping mark stays static (accepted: the gate's pulse). In the camera's
    px (the default) the first would pass: its sightings are separate tracks."""
    steps = [(0, 0), *steps]
    calls = {"n": 0}

    def wrap(be):
        class Scripted:
            def infer(self, images):  # the particle's box in model px (half the camera's)
                boxes, raw = be.infer(images)
                boxes, out = boxes.copy(), np.zeros_like(raw)
                n = calls["n"]
                x = 100.0 + sum(dx for dx, _ in steps[: n + 1])
                y = 60.0 + sum(dy for _, dy in steps[: n + 1])
                out[:, 0, 1] = 0.9
                calls["n"] += 1
                boxes[:, 0] = [x, y, x + 6.0, y + 6.0]
                return boxes, out

        return Scripted()

    f = MockFactory()
    cfg = _cfg(
        bundle,
        tmp_path,
        camera={"frames": len(steps), "width": 640, "height": 512},
        decision={"reference_height": 256.0},
    )
    with line_runtime(cfg, f, wrap) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames(len(steps), (512, 640, 3))))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)
        states = [s.state for s in pin.states]
    assert states == ([False, True, False] if pulse else [False])
    decision, fault, reason = _rows(tmp_path)["c0"]
    assert decision == ("accept" if pulse else "reject") and fault is None
    assert words in reason


# Box centres, model px: a probe-look look-alike's as the demo placed them, moved by (-300, -100).
WANDER = [(130, 166), (132, 173), (132, 170), (132, 164), None, (129, 167), (129, 166), (129, 166)]


@pytest.mark.parametrize(
    "decision, pulse, words",
    [
        ({}, False, "moving particle (9 px), seen in 7/8 frames"),
        ({"wander_straightness": 0.3}, True, "static: mark (9 px), seen in 7/8 frames"),
    ],
)
def test_wander_test_reaches_the_gate(
    bundle: Path, tmp_path: Path, decision: dict, pulse: bool, words: str
) -> None:
    """A look-alike whose box wanders in place (a good container of the probe look, as the
    demo model placed it): rejected by default, accepted - the gate's pulse - with the
    opt-in wander test set in the line config."""
    calls = {"n": 0}

    def wrap(be):
        class Scripted:
            def infer(self, images):
                boxes, raw = be.infer(images)
                boxes, out = boxes.copy(), np.zeros_like(raw)
                xy = WANDER[calls["n"]]
                calls["n"] += 1
                if xy is not None:  # missed that frame: every score stays 0
                    out[:, 0, 2] = 0.8
                    boxes[:, 0] = [xy[0] - 3.0, xy[1] - 3.0, xy[0] + 3.0, xy[1] + 3.0]
                return boxes, out

        return Scripted()

    f = MockFactory()
    cfg = _cfg(bundle, tmp_path, camera={"frames": len(WANDER)}, decision=decision)
    with line_runtime(cfg, f, wrap, lambda _: None) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames(len(WANDER))))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)
        states = [s.state for s in pin.states]
    assert states == ([False, True, False] if pulse else [False])
    decision_row, fault, reason = _rows(tmp_path)["c0"]
    assert decision_row == ("accept" if pulse else "reject") and fault is None
    assert words in reason
