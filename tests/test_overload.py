"""An overloaded line drains: the model's time goes to containers that can still be decided
in time. A container with less time left than a decision takes is rejected without a model
call, and one rejected at its deadline while inferred runs no more frames; the containers
behind them are decided and released. Judged at the gate pin (accept wiring: a container
passes only on its accept pulse) and in the audit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.jobs import Outcome
from edge.runtime import Job
from edge.simulate import pin_intervals
from edge.verdict import ABANDONED

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows

FRAME_S = 0.3  # the slowed model: a 3-frame container takes 0.9 s at least


class Slowed:
    """The real backend, each call held `delay` s (a busy or throttled engine), or until
    `hold` is set (a stalled one), and counted."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.delay = inner, 0.0
        self.calls: List[float] = []
        self.hold = threading.Event()
        self.hold.set()

    def infer(self, images: Any) -> Any:
        self.calls.append(time.monotonic())
        self.hold.wait(30)
        time.sleep(self.delay)
        return self.inner.infer(images)


def _wrapping(made: List[Slowed]) -> Callable[[Any], Slowed]:
    """`line_runtime`'s `wrap_backend`: each backend it opens, slowed, into `made`."""

    def wrap(inner: Any) -> Slowed:
        made.append(Slowed(inner))
        return made[-1]

    return wrap


def _passed(
    gate: Any, t0: float, edges: Dict[str, float], delay: float, pulse: float
) -> Dict[str, bool]:
    cs = gated(edges, pin_intervals(gate, t0), delay, pulse, "accept")
    return {cid: bool(c.passed) for cid, c in cs.items()}


def test_a_container_that_cannot_be_decided_in_time_gets_no_model_call(
    bundle: Path, tmp_path: Path
) -> None:
    """c0 is decided (at least 0.9 s) and released. c1's trigger came 2.3 s before it
    reached the line (a trigger callback held up): 0.6 s to its deadline, under what the
    last decision took, so it is rejected `late` without a model call (before, it took the
    model for 0.9 s or more and was rejected at its deadline anyway, and c2 behind it was
    late too). c2, triggered next, gets the model at once and its accept pulse at its gate
    time."""
    cfg = _cfg(
        bundle,
        tmp_path,
        decision={"min_evidence": 99.0},  # every decided container is an accept
        gpio={"delay_ms": 3000.0},  # deadline: trigger + 2.9 s
        model={"reference_every_s": 0.0},  # no reference frames between the containers
    )
    delay, pulse = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    made: List[Slowed] = []
    f = MockFactory()
    with line_runtime(cfg, f, _wrapping(made)) as rt:
        (be,) = made
        be.delay = FRAME_S
        gate = f.pin(cfg.gpio.ejector_pin)
        t0 = time.monotonic()
        gate.clear_states()
        edges = {"c0": time.monotonic()}
        rt.submit(Job("c0", edges["c0"], _frames()))
        assert rt.drain(30)
        before_c1 = len(be.calls)
        # c1's edge 0.5 s after c0's: its frames come before any later trigger, and its
        # gate time is well apart from c0's pulse
        assert _wait_for(lambda: time.monotonic() > edges["c0"] + 2.8, 10)
        edges["c1"] = time.monotonic() - 2.3
        rt.submit(Job("c1", edges["c1"], _frames()))
        assert rt.drain(30)  # its frames taken before the next trigger
        edges["c2"] = time.monotonic()
        rt.submit(Job("c2", edges["c2"], _frames()))
        assert rt.drain(30)
        calls_c1_c2 = len(be.calls) - before_c1
        assert _wait_for(lambda: time.monotonic() > edges["c2"] + delay + pulse + 0.2, 10)
        assert rt.io.pulses.wait_idle(5)
        passed = _passed(gate, t0, edges, delay, pulse)
    rows = _rows(tmp_path)
    assert rows["c1"][:2] == ("reject", "late")
    assert "fastest recent decision; not inferred" in rows["c1"][2]
    assert calls_c1_c2 == 3  # c2's three frames; none of c1's
    assert rows["c0"][0] == rows["c2"][0] == "accept"
    assert passed == {"c0": True, "c1": False, "c2": True}


def test_a_container_rejected_at_its_deadline_while_inferred_runs_no_more_frames(
    bundle: Path, tmp_path: Path
) -> None:
    """The engine stalls in c0's first frame past c0's deadline: the supervisor rejects c0
    (`stall`), and when the call comes back c0's other two frames are not run (before, the
    model spent two more calls on a container already rejected, the time c1 behind it
    needed). c1 is decided and passes on its accept pulse; c0 gets none."""
    cfg = _cfg(
        bundle,
        tmp_path,
        decision={"min_evidence": 99.0},
        gpio={"delay_ms": 1500.0},
        model={"reference_every_s": 0.0},
    )
    delay, pulse = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    seen: List[Outcome] = []
    made: List[Slowed] = []
    f = MockFactory()
    with line_runtime(cfg, f, _wrapping(made), seen.append) as rt:
        (be,) = made
        gate = f.pin(cfg.gpio.ejector_pin)
        t0 = time.monotonic()
        gate.clear_states()
        be.calls.clear()
        be.hold.clear()  # the engine stalls from its next call
        edges = {"c0": time.monotonic()}
        rt.submit(Job("c0", edges["c0"], _frames()))
        assert _wait_for(lambda: any(o.container_id == "c0" for o in seen), 10)  # the stall
        be.hold.set()  # the stalled call comes back
        assert _wait_for(lambda: rt.holding("inference") is None, 10)
        c0_calls = len(be.calls)
        edges["c1"] = time.monotonic()
        rt.submit(Job("c1", edges["c1"], _frames()))
        assert rt.drain(30)
        assert _wait_for(lambda: time.monotonic() > edges["c1"] + delay + pulse + 0.2, 10)
        assert rt.io.pulses.wait_idle(5)
        passed = _passed(gate, t0, edges, delay, pulse)
        superseded = rt.ledger.counts["superseded"]
    rows = _rows(tmp_path)
    assert c0_calls == 1  # the stalled call; not the two frames behind it
    assert rows["c0"][:2] == ("reject", "stall") and rows["c1"][0] == "accept"
    assert passed == {"c0": False, "c1": True}
    assert superseded == 1  # the abandoned verdict came after the stall: dropped
    assert ABANDONED not in rows["c0"][2]  # the supervisor's stall is what is on record
