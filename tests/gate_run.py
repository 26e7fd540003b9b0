"""What the gate pin did to containers: the gate model over a pin history, two
containers through the runtime with one backend call spoiled (the tiles, mirror and
output-shape tests share it), and accepted containers through a live line with a fault
injected between triggers, each release timed at the gate pin (the audit-file tests)."""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Tuple

from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.config import LineConfig
from edge.runtime import Job
from edge.simulate import Physical, gate_model, pin_intervals

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


def released(
    cfg: LineConfig, ids: List[str], between: Optional[Callable[[str], None]] = None
) -> Tuple[List[float], List[bool], bool]:
    """Containers `ids` (accepted by `cfg`'s decision) through a live runtime on MockFactory
    pins, `between(id)` run before each trigger -> (each gate pulse's start less its
    container's trigger + delay, the alarm pin's states, whether the alarm was raised);
    every container released once."""
    f = MockFactory()
    alarm = f.pin(cfg.gpio.alarm_pin)
    delay, triggers = cfg.gpio.delay_ms / 1000, []
    with line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        alarm.clear_states()
        t_clear = time.monotonic()
        for i in ids:
            if between is not None:
                between(i)
            triggers.append(time.monotonic())
            rt.submit(Job(i, triggers[-1], _frames()))
            assert rt.drain(10)
        assert rt.io.pulses.wait_idle(delay + 2)
        on = pin_intervals(gate, t_clear)
        raised = rt.alarm
        alarm_states = [st.state for st in alarm.states]
    assert len(on) == len(ids)  # every container released, none twice
    return [a - (t + delay) for (a, _), t in zip(on, triggers)], alarm_states, raised
