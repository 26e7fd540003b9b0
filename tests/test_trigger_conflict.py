"""Two triggers closer than one gate pulse plus the debounce: the gate cannot tell the
containers apart, so no accept may pass either (`trigger_conflict`). Judged on the gate
pin's history, in both wirings and both orders of decision."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Dict, Tuple

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.runtime import Job, Runtime
from edge.simulate import Physical, pin_intervals

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows


def _at_the_gate(
    bundle: Path, tmp: Path, wiring: str, play: Callable[[Runtime, float], Dict[str, float]]
) -> Tuple[Dict[str, Physical], dict]:
    """Run `play(rt, t0)` (it submits, returns each container's edge time) on a runtime
    whose decision accepts everything; past the last gate, each container's physical
    outcome from the gate pin and its last audit row."""
    cfg = _cfg(bundle, tmp, decision={"min_evidence": 99.0}, gpio={"energise_to": wiring})
    delay, pulse = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    f = MockFactory()
    gate = f.pin(cfg.gpio.ejector_pin)
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        t0 = time.monotonic()
        edges = play(rt, t0)
        assert rt.drain(10)
        last = max(edges.values())
        assert _wait_for(lambda: time.monotonic() > last + delay + pulse + 0.1)
        assert rt.io.pulses.wait_idle(3)
        on = pin_intervals(gate, t0)
    return gated(edges, on, delay, pulse, wiring), _rows(tmp)


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_ghost_trigger_never_releases_the_real_container_beside_it(
    wiring: str, bundle: Path, tmp_path: Path
) -> None:
    """A trigger 5 ms after a real one (a bounce that got past the debounce, a glitch) is a
    container of its own to the runtime, with the real one's frames: an accept. Its accept
    pulse would fall inside the real container's gate window and pass it, whatever the
    real one's decision (here a camera drop: a reject). Judged on the gate pin: the real
    container is rejected, neither accept is released, and a container a normal pitch
    later is accepted and passes."""

    def play(rt: Runtime, t0: float) -> Dict[str, float]:
        # Both edges already past when submitted: frames stamped before a trigger are
        # not that container's.
        edges = {"real": t0 - 0.005, "ghost": t0, "next": t0 + 0.4}
        rt.submit(Job("real", edges["real"], lambda: None))  # its camera drops it
        rt.submit(Job("ghost", edges["ghost"], _frames()))
        assert _wait_for(lambda: time.monotonic() > edges["next"])
        rt.submit(Job("next", edges["next"], _frames()))
        return edges

    cs, rows = _at_the_gate(bundle, tmp_path, wiring, play)
    assert not cs["real"].passed and rows["real"][:2] == ("reject", "camera_drop")
    assert not cs["ghost"].passed and rows["ghost"][:2] == ("reject", "trigger_conflict")
    assert cs["next"].passed == (rows["next"][0] == "accept")  # in time on any machine here


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_an_accept_released_before_a_trigger_beside_it_is_withdrawn(
    wiring: str, bundle: Path, tmp_path: Path
) -> None:
    """The other order: the first container is decided, recorded and released before a
    second trigger 5 ms after its own arrives (a decision faster than one pulse plus the
    debounce). Its pending accept pulse would pass the second container (here a camera
    drop) too, so the second trigger withdraws it: with accept wiring the first is
    rejected at the gate and amended `trigger_conflict`; with reject wiring the second's
    own armed reject pulse stands. Judged on the gate pin."""

    def play(rt: Runtime, t0: float) -> Dict[str, float]:
        edges = {"first": t0, "second": t0 + 0.005}
        rt.submit(Job("first", edges["first"], _frames()))
        assert _wait_for(lambda: rt.counts["accept"] == 1)  # recorded and released
        rt.submit(Job("second", edges["second"], lambda: None))  # its camera drops it
        return edges

    cs, rows = _at_the_gate(bundle, tmp_path, wiring, play)
    assert not cs["second"].passed and rows["second"][:2] == ("reject", "camera_drop")
    if wiring == "accept":
        assert not cs["first"].passed and rows["first"][:2] == ("reject", "trigger_conflict")
