"""What the gate pin did to containers: the gate model over a pin history, and two
containers through the runtime with one backend call spoiled (the tiles, mirror and
output-shape tests share it)."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Tuple

from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.config import LineConfig
from edge.runtime import Job
from edge.simulate import Physical, gate_model

from .test_runtime import _frames, _rows


def gated(
    edges: Dict[str, float],
    on: List[Tuple[float, float]],
    delay_s: float,
    pulse_s: float,
    wiring: str,
) -> Dict[str, Physical]:
    """The containers triggered at `edges` (id -> monotonic time) as the gate, wired to pass
    on `wiring`, read the gate output's on-intervals `on` -> id -> container (`passed` set)."""
    cs = {cid: Physical(cid, "accept", t) for cid, t in edges.items()}
    gate_model(list(cs.values()), on, delay_s, pulse_s, wiring)
    return cs


def rising_edges(pin) -> int:
    """Pulses a MockPin gave: its off -> on transitions since its states were cleared."""
    return sum(1 for a, b in zip(pin.states, pin.states[1:]) if b.state and not a.state)


def _spoil_call(n: int, spoil: Callable) -> Tuple[Callable, Dict[str, int]]:
    """A `wrap_backend` whose backend's `n`-th call returns spoil(boxes, scores) instead of
    its outputs -> (wrap, the call counter)."""
    calls = {"n": 0}

    def wrap(be):
        class Spoiled:
            def infer(self, images):
                boxes, scores = be.infer(images)
                calls["n"] += 1
                return spoil(boxes, scores) if calls["n"] == n else (boxes, scores)

        return Spoiled()

    return wrap, calls


def _two_containers(
    cfg: LineConfig, wrap: Callable, shape: Tuple[int, ...]
) -> Tuple[Dict[str, tuple], List[bool]]:
    """Containers c0 then c1 (3 random frames of `shape` each) through the runtime on
    MockFactory pins -> their audit rows and the gate pin's states from c0's trigger on."""
    f = MockFactory()
    with line_runtime(cfg, f, wrap, lambda o: None) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        for cid in ("c0", "c1"):
            rt.submit(Job(cid, time.monotonic(), _frames(3, shape)))
            assert rt.drain(20)
        assert rt.io.pulses.wait_idle(15)
        states = [s.state for s in pin.states]
    return _rows(cfg.audit.folder.parent), states
