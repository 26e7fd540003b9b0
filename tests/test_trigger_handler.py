"""The trigger handler raises: `Runtime.submit` runs on the trigger input's thread (the pin
factory's), where an exception would lose the container - no row, and with the reject
wiring no reject pulse armed, so it would pass - and may end the handling of every later
edge. Injected where it happens, each container triggered by an edge on the trigger pin as
`fod run` wires it; judged at the gate pin."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, List, Tuple

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import frozen_heap, line_runtime
from edge.config import LineConfig
from edge.intake import Intake
from edge.runtime import Job, Runtime
from edge.simulate import pin_intervals

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows

TRIGGER = "GPIO22"


def _accepting_line(
    bundle: Path, tmp_path: Path, wiring: str, delay_ms: float = 1500
) -> LineConfig:
    """A line whose rule accepts any frames, triggered on TRIGGER, with this wiring. Its
    pulse is 100 ms: a pulse thread woken more than a pulse length late misses its pulse
    (as it must on a line); a full-suite run on 2 loaded cores once showed no pulse with
    20 ms, most likely so. These tests are about the trigger handler, not that wake-up."""
    gpio = {"trigger_pin": TRIGGER, "energise_to": wiring, "delay_ms": delay_ms, "pulse_ms": 100}
    return _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio=gpio)


def _fail_once(obj: object, name: str, when: Callable[..., bool], after: bool = False) -> None:
    """`obj.name` raises once, on the first call `when(*args)` picks - after doing its work
    if `after` (a driver or library call that fails once its effect is made); else as
    before."""
    real, done = getattr(obj, name), []

    def call(*args, **kw):
        if not done and when(*args):
            done.append(1)
            if after:
                real(*args, **kw)
            raise RuntimeError(f"injected: {name}")
        return real(*args, **kw)

    setattr(obj, name, call)


def _two_containers(rt: Runtime, f: MockFactory, escaped: List[BaseException]) -> list:
    """c0 and c1 triggered 0.3 s apart by edges of the trigger pin, c1 with good frames
    (the rule accepts them) -> their edge times."""
    names = iter(["c0", "c1"])
    rt.io.on_trigger(lambda t: rt.submit(Job(next(names), t, _frames())))
    pin, times = f.pin(TRIGGER), []
    for _ in range(2):
        times.append(time.monotonic())
        try:  # MockFactory calls the handler in this thread; a real factory, in its own
            pin.drive_high()
        except Exception as e:
            escaped.append(e)
        pin.drive_low()
        time.sleep(0.3)
    return times


def _faulty_pair(rt: Runtime, f: MockFactory, cfg: LineConfig) -> Tuple[float, float, list]:
    """c0 (whose handler a test made fail) and c1 through `_two_containers`, until past
    c1's gate time -> their edge times and the gate pin's on-intervals. The alarm pin must
    be up and no exception escaped the handler: the next edge was still handled."""
    escaped: List[BaseException] = []
    delay = cfg.gpio.delay_ms / 1000
    gate, alarm = f.pin(cfg.gpio.ejector_pin), f.pin(cfg.gpio.alarm_pin)
    gate.clear_states()
    t_clear = time.monotonic()
    t0, t1 = _two_containers(rt, f, escaped)
    assert rt.drain(10)
    assert _wait_for(lambda: time.monotonic() > t1 + delay + 0.3, delay + 1)
    on = pin_intervals(gate, t_clear)
    assert _wait_for(lambda: alarm.state, 2), "the alarm pin stayed off"
    assert escaped == []
    return t0, t1, on


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_trigger_handler_that_raises_rejects_its_container_at_the_gate(
    bundle: Path, tmp_path: Path, wiring: str
) -> None:
    """Accept wiring: c0's handler raises once it is on the books (the trigger book's
    `add`). Reject wiring: it raises before (arming c0's reject pulse). Either way c0 is
    rejected at the gate - no accept pulse, or its reject pulse fires at its gate time -
    and on record as `thread_crash`, the alarm pin goes up, and c1, triggered after it on
    the same pin, is released at its own gate time."""
    cfg = _accepting_line(bundle, tmp_path, wiring)
    f = MockFactory()
    delay = cfg.gpio.delay_ms / 1000
    with frozen_heap(), line_runtime(cfg, f) as rt:
        if wiring == "accept":
            _fail_once(rt.triggers, "add", lambda t, cid: cid == "c0")
        else:
            _fail_once(rt.io, "arm", lambda cid, t: cid == "c0")
        t0, t1, on = _faulty_pair(rt, f, cfg)
    gate_at = t0 if wiring == "reject" else t1  # the one pulse: c0's reject or c1's accept
    assert len(on) == 1 and abs(on[0][0] - (gate_at + delay)) < 0.2, (on, gate_at + delay)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "thread_crash") and "trigger handler" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)


def test_a_reject_pulse_that_cannot_be_armed_is_on_record_as_passed(
    bundle: Path, tmp_path: Path
) -> None:
    """Reject wiring: arming c0's reject pulse raises, and so does the trigger handler's
    second try. No pulse ejects c0: the gate pin stays off at its gate time, so it passes,
    and its last row must say so (before, its only row said rejected, `thread_crash`), with
    the alarm pin up; c1 is released at its own gate time."""
    cfg = _accepting_line(bundle, tmp_path, "reject")
    f = MockFactory()
    delay = cfg.gpio.delay_ms / 1000
    with frozen_heap(), line_runtime(cfg, f) as rt:
        for _ in range(2):  # the handler's arm, then its second try
            _fail_once(rt.io, "arm", lambda cid, t: cid == "c0")
        t0, t1, on = _faulty_pair(rt, f, cfg)
        assert rt.drain(10)
        reasons = rt.alarm_reasons
    assert (rt.counts["reject"], rt.counts["passed_unaccepted"], rt.counts["accept"]) == (0, 1, 1)
    assert on == []  # no pulse: c0 and c1 both passed the gate
    physical = gated({"c0": t0, "c1": t1}, on, delay, cfg.gpio.pulse_ms / 1000, "reject")
    assert physical["c0"].passed and physical["c1"].passed
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("accept", "gpio_error") and "PASSED the gate" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)
    assert any("c0: its reject pulse could not be armed" in r for r in reasons), reasons


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_triggers_while_the_runtime_stops(bundle: Path, tmp_path: Path, wiring: str) -> None:
    """The line keeps triggering while the runtime stops (`close`, as at every restart).
    cA is accepted, its row takes 0.6 s to write (a slow card), and close starts as that
    write does; c1 comes 0.2 s into close (close still waits for the rows), c2 0.9 s into
    it (close waits for the pulses due). c1 is a reject on record and, with the reject
    pulse fires at its gate time. c2 comes after close stopped taking pulses: with the
    accept wiring still a reject on record (it needs no pulse); with the reject wiring no
    pulse can be promised, so it goes unseen - no row, no pulse, counted - as at any
    stopped unit. Before, neither got a row, and c1 no reject pulse: it passed.
    The gate is 3 s out: close waits until cA's pulse, which c2 must come before (with the
    accept wiring) even where cA's decision took a loaded machine a second or two."""
    cfg = _accepting_line(bundle, tmp_path, wiring, delay_ms=3000)
    slow_next = threading.Event()

    def slow_card(action: int, table: str, *rest) -> int:
        if action == sqlite3.SQLITE_INSERT and table == "containers" and slow_next.is_set():
            slow_next.clear()
            time.sleep(0.6)
        return sqlite3.SQLITE_OK

    f = MockFactory()
    delay = cfg.gpio.delay_ms / 1000
    at = {}  # container -> its trigger edge
    with frozen_heap(), line_runtime(cfg, f, audit_authorizer=slow_card) as rt:
        edge = {"of": ""}  # the container the next edge triggers
        rt.io.on_trigger(lambda t: rt.submit(Job(edge["of"], t, _frames())))
        gate, trigger = f.pin(cfg.gpio.ejector_pin), f.pin(TRIGGER)
        gate.clear_states()
        t_clear = t0 = time.monotonic()
        closing = threading.Thread(target=rt.close)
        slow_next.set()  # cA's row, the next one written
        for what, when in [("cA", 0.0), ("close", 0.0), ("c1", 0.2), ("c2", 0.9)]:
            if what == "close":  # as cA's row starts to be written
                assert _wait_for(lambda: not slow_next.is_set(), 5)
                t0 = time.monotonic()
                closing.start()
                continue
            time.sleep(max(0.0, t0 + when - time.monotonic()))
            edge["of"], at[what] = what, time.monotonic()
            trigger.drive_high()
            trigger.drive_low()
        closing.join(10)
        assert not closing.is_alive()
        on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    assert rows["cA"][:2] == ("accept", None) and rows["c1"][:2] == ("reject", "shutdown")
    due = at["cA"] if wiring == "accept" else at["c1"]  # cA's accept or c1's reject pulse
    assert len(on) == 1 and abs(on[0][0] - (due + delay)) < 0.1, (on, due + delay)
    if wiring == "accept":
        assert rows["c2"][:2] == ("reject", "shutdown") and rt.counts.get("unseen", 0) == 0
    else:
        assert "c2" not in rows and rt.counts["unseen"] == 1


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_trigger_midway_as_close_steps_on_gets_its_row_and_pulse(
    bundle: Path, tmp_path: Path, wiring: str
) -> None:
    """c1's trigger handler is held up just past its checks (arming its reject pulse takes
    0.4 s: the thread preempted there), and close starts meanwhile. close waits for it at
    each step: c1 is a reject on record and, with the reject wiring, its reject pulse
    fires at its gate time before close returns. Before, close stepped on: it stopped
    waiting for pulses and rows, c1 got no row, and no pulse (its process ends after
    close: here the pins are released then)."""
    cfg = _accepting_line(bundle, tmp_path, wiring)
    f = MockFactory()
    midway = threading.Event()
    with frozen_heap(), line_runtime(cfg, f) as rt:
        real_arm = rt.io.arm

        def held_up(cid: str, t: float):
            if cid == "c1":
                midway.set()
                time.sleep(0.4)
            return real_arm(cid, t)

        rt.io.arm = held_up  # type: ignore[method-assign]
        rt.io.on_trigger(lambda t: rt.submit(Job("c1", t, _frames())))
        gate, trigger = f.pin(cfg.gpio.ejector_pin), f.pin(TRIGGER)
        gate.clear_states()
        t_clear = t1 = time.monotonic()
        edge = threading.Thread(target=lambda: (trigger.drive_high(), trigger.drive_low()))
        edge.start()
        assert midway.wait(5)
        rt.close()
        on = pin_intervals(gate, t_clear)
        edge.join(5)
    if wiring == "accept":
        assert on == []
    else:
        delay = cfg.gpio.delay_ms / 1000
        assert len(on) == 1 and abs(on[0][0] - (t1 + delay)) < 0.1, (on, t1 + delay)
    written = list((tmp_path / "audit").glob("audit-*.db"))  # the first row makes one
    assert written and _rows(tmp_path)["c1"][:2] == ("reject", "shutdown")


def test_close_steps_on_past_a_trigger_handler_that_never_returns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trigger handler stuck midway (in a driver call that never returns) holds close up
    for at most a second: close never hangs; the step is taken, and said so."""
    intake = Intake(LineConfig(), *[None] * 6, time.monotonic)  # type: ignore[arg-type]
    held, release = threading.Event(), threading.Event()

    def stuck() -> None:
        with intake._midway:
            held.set()
            release.wait(30)

    threading.Thread(target=stuck, daemon=True).start()
    assert held.wait(5)
    stepping = threading.Thread(target=intake.close_step, args=(intake.audit_closed,))
    stepping.start()
    stepping.join(10)  # a bound on a hang, not a timing claim
    release.set()
    assert not stepping.is_alive() and intake.audit_closed.is_set()
    assert "a trigger handler held up" in caplog.text
