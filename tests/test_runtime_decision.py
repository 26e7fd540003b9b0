"""The decision rule as the runtime applies it, judged by the ejector pin: the model's
outputs are scripted per frame (real ONNX Runtime underneath, MockFactory pins)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.runtime import Job

from .quiet import quiet_outputs
from .test_path_tests import BUBBLES
from .test_runtime import _cfg, _frames, _rows

Sighting = Optional[Tuple[float, float, float]]  # (x0, y0, score) of a 6-px box; None: unseen


def _gate(
    bundle: Path, tmp_path: Path, script: Sequence[Sighting], label: int, **over
) -> Tuple[List[bool], Tuple[str, Optional[str], str], list]:
    """One container whose model outputs are scripted per frame (one `label` box, model px)
    through the runtime: the ejector pin's states, its audit row (decision, fault, reason)
    and the outcomes the runtime reported."""
    calls = {"n": 0}

    def wrap(be):
        class Scripted:
            def infer(self, images):
                boxes, raw = be.infer(images)
                boxes, out = boxes.copy(), quiet_outputs(*raw.shape)[1]
                seen = script[calls["n"]]
                calls["n"] += 1
                if seen is not None:  # else every score stays quiet: nothing that frame
                    x, y, score = seen
                    out[:, 0, label] = score
                    boxes[:, 0] = [x, y, x + 6.0, y + 6.0]
                return boxes, out

        return Scripted()

    f = MockFactory()
    cfg = _cfg(bundle, tmp_path, **over)
    outcomes: list = []
    shape = (cfg.camera.height, cfg.camera.width, 3)
    with line_runtime(cfg, f, wrap, outcomes.append) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames(len(script), shape)))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)  # every pulse due has fired
        states = [s.state for s in pin.states]
    return states, _rows(tmp_path)["c0"], outcomes


def _check(states: List[bool], row: Tuple[str, Optional[str], str], pulse: bool, words: str):
    """Accepted: one pulse on the gate and an accept row; rejected: no pulse, a reject row."""
    assert states == ([False, True, False] if pulse else [False])
    decision, fault, reason = row
    assert decision == ("accept" if pulse else "reject") and fault is None
    assert words in reason


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
    script = [(100.0, 150.0 + step * n, s) for n, s in enumerate(scores)]
    states, row, outcomes = _gate(bundle, tmp_path, script, 1, camera={"frames": len(scores)})
    assert outcomes[0].fault is None
    _check(states, row, pulse, words)


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
    xy = np.add(np.cumsum([(0, 0), *steps], axis=0), (100.0, 60.0))  # model px: half the camera's
    script = [(float(x), float(y), 0.9) for x, y in xy]
    camera = {"frames": len(script), "width": 640, "height": 512}
    states, row, _ = _gate(
        bundle, tmp_path, script, 1, camera=camera, decision={"reference_height": 256.0}
    )
    _check(states, row, pulse, words)


# A good container of the probe look: a look-alike's box corners (model px) as the demo
# placed them, moved by (-303, -103); it was missed in frame 4.
WANDER = [(127, 163), (129, 170), (129, 167), (129, 161), None, (126, 164), (126, 163), (126, 163)]


@pytest.mark.parametrize(
    "path, label, decision, pulse, words",
    [
        # A look-alike whose box wanders in place: rejected by default, accepted with the
        # opt-in wander test.
        (WANDER, 2, {}, False, "moving particle (9 px), seen in 7/8 frames"),
        (WANDER, 2, {"wander_straightness": 0.3}, True, "static: mark (9 px), seen in 7/8"),
        # Two bubbles rising one after the other, 28 px apart, that linking joins into one
        # track (tests/test_decision.py): accepted by default, rejected with the jump test off.
        (BUBBLES, 1, {}, True, "rising: bubble (33 px), seen in 8/8 frames"),
        (BUBBLES, 1, {"jump_distance": 0.0}, False, "moving particle (33 px), seen in 8/8"),
    ],
)
def test_path_tests_reach_the_gate(
    bundle: Path, tmp_path: Path, path: list, label: int, decision: dict, pulse: bool, words: str
) -> None:
    """A path test set in the line config decides the gate: an accept is the gate's pulse."""
    script = [None if c is None else (float(c[0]), float(c[1]), 0.8) for c in path]
    camera = {"frames": len(script)}
    states, row, _ = _gate(bundle, tmp_path, script, label, camera=camera, decision=decision)
    _check(states, row, pulse, words)
