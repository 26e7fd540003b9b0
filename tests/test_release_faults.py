"""The release of a recorded accept fails: it raises (before or after it scheduled the
accept pulse or cancelled the reject pulse), or the accept is on record only after its
gate time. Injected where it happens - the pulse scheduler's calls that `LineIO.release`
makes, the SQLite INSERT of the accept's row - and judged at the gate pin."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import frozen_heap, line_runtime
from edge.config import LineConfig
from edge.pulses import PulseScheduler
from edge.runtime import Job, Runtime
from edge.simulate import pin_intervals

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows
from .test_trigger_handler import _fail_once


def _line(bundle: Path, tmp_path: Path, wiring: str, delay_ms: float = 1500) -> LineConfig:
    """A line whose rule accepts any frames. Pulses of 100 ms: a pulse thread woken a
    pulse length late misses its pulse, which these tests are not about."""
    gpio = {"energise_to": wiring, "delay_ms": delay_ms, "pulse_ms": 100}
    return _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio=gpio)


def _gate_run(
    cfg: LineConfig, f: MockFactory, rt: Runtime, triggers: List[Tuple[str, float]]
) -> Tuple[Dict[str, float], List[Tuple[float, float]]]:
    """Containers (id, seconds before now it was triggered) submitted 0.3 s apart -> their
    trigger times and the gate pin's on-intervals once every pulse is done."""
    gate, delay, at = f.pin(cfg.gpio.ejector_pin), cfg.gpio.delay_ms / 1000, {}
    gate.clear_states()
    t_clear = time.monotonic()
    for cid, ago in triggers:
        at[cid] = time.monotonic() - ago
        rt.submit(Job(cid, at[cid], _frames()))
        time.sleep(0.3)
    assert rt.drain(10)
    assert rt.io.pulses.wait_idle(delay + 2)
    return at, pin_intervals(gate, t_clear)


@pytest.mark.parametrize("after", [False, True], ids=["before-effect", "after-effect"])
@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_release_that_raises_rejects_its_container_at_the_gate(
    bundle: Path, tmp_path: Path, wiring: str, after: bool
) -> None:
    """c0's accept is on record, and its release raises: before or after it scheduled the
    accept pulse (accept wiring) or cancelled the armed reject pulse (reject wiring). c0 is
    rejected at the gate either way - no accept pulse, or its reject pulse at its gate
    time - and its last row is a `gpio_error` reject; c1 is released at its own gate time.
    Before, a release that raised after its effect left c0 passing while on record as
    rejected: its accept pulse fired, or its reject pulse stayed cancelled."""
    cfg = _line(bundle, tmp_path, wiring)
    f, delay = MockFactory(), cfg.gpio.delay_ms / 1000
    with frozen_heap(), line_runtime(cfg, f) as rt:
        p = rt.io.pulses
        if wiring == "accept":  # `release` schedules the accept pulse
            _fail_once(p, "schedule", lambda at, tag: tag == "c0", after)
        else:  # `release` cancels the armed reject pulse
            _fail_once(p, "cancel", lambda pulse: pulse.tag == "c0", after)
        at, on = _gate_run(cfg, f, rt, [("c0", 0.0), ("c1", 0.0)])
        alarm = rt.alarm
    pulsed = at["c0"] if wiring == "reject" else at["c1"]  # c0's reject, or c1's accept
    assert len(on) == 1 and abs(on[0][0] - (pulsed + delay)) < 0.2, (on, pulsed + delay)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "gpio_error") and "release failed" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)
    assert not alarm  # one fault reject: under alarm_faults


def test_a_release_whose_reject_pulse_cannot_be_armed_again_is_on_record_as_passed(
    bundle: Path, tmp_path: Path
) -> None:
    """Reject wiring: c0's release cancels its reject pulse and raises, and arming the
    pulse again raises too. Nothing can reject c0 any more: it passes the gate (no pulse
    at all), and its last row says so - an accept row with `gpio_error`, "may have PASSED"
    - with the alarm up at once."""
    cfg = _line(bundle, tmp_path, "reject")
    f = MockFactory()
    with frozen_heap(), line_runtime(cfg, f) as rt:
        p = rt.io.pulses
        _fail_once(p, "cancel", lambda pulse: pulse.tag == "c0", after=True)
        armed: List[str] = []  # c0's arming at its trigger goes through, the second not

        def again(at: float, tag: str) -> bool:
            armed.append(tag)
            return armed.count("c0") > 1 and tag == "c0"

        _fail_once(p, "schedule", again)
        _, on = _gate_run(cfg, f, rt, [("c0", 0.0)])
        assert _wait_for(lambda: f.pin(cfg.gpio.alarm_pin).state, 2), "the alarm pin stayed off"
    assert on == []
    decision, fault, reason = _rows(tmp_path)["c0"]
    assert (decision, fault) == ("accept", "gpio_error") and "may have PASSED" in reason


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_an_accept_on_record_after_its_gate_is_rejected_there(
    bundle: Path, tmp_path: Path, wiring: str
) -> None:
    """c0 (triggered 2 s before it is submitted, its gate 1 s later) is decided in time,
    but its accept row is committed only 0.1 s after its gate time (a slow card). Its
    release comes too late: no accept pulse (accept wiring), or its reject pulse fired at
    its gate time (reject wiring); its last row is a `late` reject. c1, whose row waited
    behind c0's, is released at its own gate time."""
    cfg = _line(bundle, tmp_path, wiring, delay_ms=3000)
    f, delay = MockFactory(), cfg.gpio.delay_ms / 1000
    slow_until: List[float] = []  # the next container row is written after this time

    def slow_card(action: int, table: str, *rest) -> int:
        if action == sqlite3.SQLITE_INSERT and table == "containers" and slow_until:
            time.sleep(max(0.0, slow_until.pop() - time.monotonic()))
        return sqlite3.SQLITE_OK

    with frozen_heap(), line_runtime(cfg, f, audit_authorizer=slow_card) as rt:
        slow_until.append(time.monotonic() - 2.0 + delay + 0.1)  # c0's gate + 0.1 s
        at, on = _gate_run(cfg, f, rt, [("c0", 2.0), ("c1", 0.0)])
    pulsed = at["c0"] if wiring == "reject" else at["c1"]  # c0's reject, or c1's accept
    assert len(on) == 1 and abs(on[0][0] - (pulsed + delay)) < 0.2, (on, pulsed + delay)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "late") and "missed the gate" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)


class _Crash(BaseException):
    """What escapes any `except Exception`: the pulse thread's stage takes it as a crash."""


def fail_inside_pulse(p: PulseScheduler, tag: str, fault: type) -> List[float]:
    """The pulse thread raises `fault` once, inside `tag`'s pulse with the gate on (where it
    looks for the pulses riding on it) -> a list that gets the time it did."""
    failed: List[float] = []
    real = p._due_while_on

    def in_pulse(on_since: float) -> Any:
        if not failed and p._on is not None and p._on.tag == tag:
            failed.append(time.monotonic())
            raise fault(f"injected: inside {tag}'s pulse")
        return real(on_since)

    p._due_while_on = in_pulse  # type: ignore[method-assign]
    return failed


@pytest.mark.parametrize("fault", [RuntimeError, _Crash], ids=["error", "crash"])
def test_an_accept_pulse_that_fails_after_the_gate_went_on_is_on_record_as_passed(
    bundle: Path, tmp_path: Path, fault: type
) -> None:
    """Accept wiring: c0's pulse goes on at its gate time, then the pulse thread fails
    inside the pulse (an error, or a crash of the thread) - where a pulse's own code runs
    once the gate is on. The controller latched the rising edge: c0 passed, and its last
    row says so (an accept with `gpio_error`); c1's pulse is whole. Before, c0's last row
    said rejected at the gate, against what the gate did."""
    cfg = _line(bundle, tmp_path, "accept")
    f, delay, pulse = MockFactory(), cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    with frozen_heap(), line_runtime(cfg, f) as rt:
        failed = fail_inside_pulse(rt.io.pulses, "c0", fault)
        at, on = _gate_run(cfg, f, rt, [("c0", 0.0), ("c1", 0.0)])
    assert failed and len(on) == 2 and abs(on[0][0] - (at["c0"] + delay)) < 0.2, on
    physical = gated(at, on, delay, pulse, "accept")
    rows = _rows(tmp_path)
    assert physical["c0"].passed and rows["c0"][:2] == ("accept", "gpio_error"), rows
    assert "after it went on at its gate time" in rows["c0"][2]
    assert physical["c1"].passed and rows["c1"][:2] == ("accept", None)
