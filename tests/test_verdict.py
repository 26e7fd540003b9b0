"""A container's frames through the model and the rule; the outcome of a failed audit write."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

from edge.decision import Decision
from edge.health import BadOutput
from edge.jobs import Outcome
from edge.postprocess import Detections
from edge.verdict import judge


def _det(score: float) -> Detections:
    if score < 0:
        return Detections(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        )
    box = np.array([[1, 2, 5, 6]], np.float32)
    return Detections(box, np.array([score], np.float32), np.array([1], np.int64))


FRAMES = [np.full((4, 4), i, np.uint8) for i in range(3)]


def test_reject_keeps_the_frame_of_its_strongest_detection() -> None:
    scores = iter([0.3, 0.9, -1.0])
    v = judge(
        FRAMES, lambda fs: [_det(next(scores))], lambda d: Decision(True, "two frames", 1, 2.0)
    )
    assert (v.reject, v.fault, v.reason) == (True, None, "two frames")
    assert v.image is FRAMES[1]
    assert v.detections == [
        [[1, 2, 5, 6, pytest.approx(0.3), 1]],
        [[1, 2, 5, 6, pytest.approx(0.9), 1]],
        [],
    ]


def test_accept_keeps_no_frame() -> None:
    v = judge(FRAMES, lambda fs: [_det(0.9)], lambda d: Decision(False, "nothing moving", 0, 0.0))
    assert (v.reject, v.fault, v.image) == (False, None, None)
    assert len(v.detections) == 3


@pytest.mark.parametrize(
    "exc, fault",
    [(BadOutput("scores are NaN"), "bad_output"), (RuntimeError("CUDA"), "backend_error")],
)
def test_a_failing_model_is_a_reject_with_its_fault(exc: Exception, fault: str) -> None:
    asked: List[int] = []

    def detect(fs: List[np.ndarray]) -> List[Detections]:
        asked.append(1)
        if len(asked) == 2:
            raise exc
        return [_det(0.1)]

    v = judge(FRAMES, detect, lambda d: Decision(False, "never asked", 0, 0.0))
    assert (v.reject, v.fault) == (True, fault)
    assert str(exc) in v.reason


def test_a_container_no_longer_awaited_runs_no_more_frames() -> None:
    """Rejected at its deadline after its first frame: the other two never reach the model,
    and the rule is never asked."""
    asked: List[int] = []

    def detect(fs: List[np.ndarray]) -> List[Detections]:
        asked.append(1)
        return [_det(0.1)]

    def rule(d: List[Detections]) -> Decision:
        raise AssertionError("no rule for an abandoned container")

    v = judge(FRAMES, detect, rule, awaited=lambda: not asked)
    assert len(asked) == 1
    assert (v.reject, v.fault, v.abandoned, v.image) == (True, "stall", True, None)


def test_a_crashing_rule_propagates_to_the_stage() -> None:
    def rule(d: List[Detections]) -> Decision:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # the supervisor rejects what the stage held
        judge(FRAMES, lambda fs: [_det(0.5)], rule)


def _out(reject: bool, fault=None) -> Outcome:
    return Outcome("c1", 1.0, reject, "why", fault, None)


def test_an_unrecorded_accept_becomes_a_reject() -> None:
    o = _out(False)
    assert o.write_failed("disk full") is False
    assert (o.reject, o.fault) == (True, "audit_unavailable")
    assert "accept not recorded (disk full)" in o.reason
    assert o.record("m", "c").decision == "reject"


@pytest.mark.parametrize("fault, extra", [(None, False), ("late", True)])
def test_a_reject_stays_one_with_the_failed_write_named(fault, extra) -> None:
    o = _out(True, fault)
    assert o.write_failed("disk full") is extra
    assert o.reject and o.fault == (fault or "audit_unavailable")
    assert o.reason == "why; first write failed (disk full)"


def test_a_failed_amend_keeps_what_physically_happened() -> None:
    # A reject pulse that never fired: the row says the container PASSED; a failed write
    # must not turn that into a recorded reject.
    o = Outcome("c1", 1.0, False, "reject pulse missed: PASSED the gate", "late", None, amends=True)
    assert o.write_failed("disk full") is True
    assert (o.reject, o.fault) == (False, "late")
    assert o.record("m", "c").decision == "accept"
