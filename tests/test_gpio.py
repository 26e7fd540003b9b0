"""The gate output on gpiozero's MockFactory: positive release, the reject wiring's armed
pulse, missed and failed pulses reported, riding pulses, the gate feedback, cleanup
(the trigger input's edges: tests/test_trigger_edges.py)."""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Tuple

import pytest
from gpiozero.pins.mock import MockFactory, MockPin

from edge.app import frozen_heap
from edge.faults import FaultyPin, Injector
from edge.gpio import GpioConfig, GpioError, LineIO, load_pin_factory
from edge.pulse_queue import PulseQueue

TOL = 0.03  # s: thread wake-up jitter on a loaded 2-core CI machine


@pytest.fixture(autouse=True)
def _frozen_heap():
    """On the line, LineIO runs inside line_runtime's frozen heap; without it, a full GC pass
    over the test process (torch imported: ~200 ms) would hold the pulses past TOL."""
    with frozen_heap():
        yield


def test_accept_release_pulses_at_the_gate() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=150, pulse_ms=40)  # energise_to = "accept" by default
    with LineIO(cfg, f) as io:
        pin = f.pin(cfg.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic()
        assert io.arm("c0", t0) is None  # positive release arms nothing
        assert io.release("c0", t0, None)
        assert io.pulses.wait_idle(2)
        states = pin.states
        (p,) = list(io.pulses.done)
    assert p.state == "fired" and abs(p.fired_t - (t0 + 0.150)) < TOL
    assert len(states) == 3 and [s.state for s in states] == [False, True, False]
    # MockPin timestamps are deltas since the previous change (clear_states, just before t0)
    assert abs(states[1].timestamp - 0.150) < TOL
    assert abs(states[2].timestamp - 0.040) < TOL


def test_release_after_the_gate_is_refused_and_nothing_fires() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=100, pulse_ms=10)
    with LineIO(cfg, f) as io:
        pin = f.pin(cfg.ejector_pin)
        pin.clear_states()
        assert not io.release("late", time.monotonic() - 0.5, None)
        time.sleep(0.05)
        states = pin.states
    assert len(states) == 1 and not states[0].state


def test_reject_wiring_armed_pulse_fires_unless_cancelled() -> None:
    f = MockFactory()
    cfg = GpioConfig(energise_to="reject", delay_ms=120, pulse_ms=20)
    with LineIO(cfg, f) as io:
        pin = f.pin(cfg.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic()
        keep, cancel = io.arm("bad", t0), io.arm("good", t0 + 0.05)
        assert io.release("good", t0 + 0.05, cancel)  # a recorded accept cancels its pulse
        assert not io.release("bad", t0, None)
        assert io.pulses.wait_idle(2)
        states = pin.states
    assert keep.state == "fired" and cancel.state == "cancelled"
    assert len(states) == 3 and [s.state for s in states] == [False, True, False]
    assert abs(states[1].timestamp - 0.120) < TOL


def test_missed_and_failed_pulses_are_reported() -> None:
    f = MockFactory()
    seen = []
    with LineIO(GpioConfig(delay_ms=50, pulse_ms=10), f, on_pulse_done=seen.append) as io:
        io.pulses.schedule(time.monotonic() - 0.5, "stale")  # its gate passed 0.5 s ago
        assert io.pulses.wait_idle(2) and [p.tag for p in seen] == ["stale"]  # reported first
        broken = f.pin(GpioConfig().ejector_pin)

        def boom(value):
            raise OSError("pin gone")

        broken._set_state = boom
        io.pulses.schedule(time.monotonic() + 0.02, "broken")
        assert io.pulses.wait_idle(2)
    assert [(p.tag, p.state) for p in seen] == [("stale", "missed"), ("broken", "error")]
    assert "pin gone" in seen[1].error


def test_a_crash_in_the_middle_of_a_pulse_leaves_the_output_off() -> None:
    """Accept wiring. The driver energises the gate, then raises something no pulse handler
    catches (SystemExit from below): an output left on would let every container through.
    The pin must go off, the crash be reported, and the next pulse still fire."""
    f = MockFactory()
    cfg = GpioConfig(delay_ms=50, pulse_ms=200)
    crashes: list = []
    seen: list = []
    with LineIO(cfg, f, on_pulse_done=seen.append) as io:
        io.pulses.on_crash = crashes.append
        pin = f.pin(cfg.ejector_pin)
        real, calls = pin._set_state, {"n": 0}

        def energise_then_exit(value):
            real(value)
            calls["n"] += 1
            if value and calls["n"] == 1:
                raise SystemExit("the driver exited")

        pin._set_state = energise_then_exit
        pin.clear_states()
        io.release("c0", time.monotonic(), None)
        time.sleep(0.15)  # c0's pulse (200 ms) would still be on
        during = pin.state
        assert io.release("c1", time.monotonic(), None)
        assert io.pulses.wait_idle(2)
        states = [s.state for s in pin.states]
    assert during is False  # cut short: the output did not stay energised
    assert [type(e) for e in crashes] == [SystemExit]
    assert [(p.tag, p.state) for p in seen] == [("c0", "error"), ("c1", "fired")]
    assert "pulse thread crashed" in seen[0].error
    assert states == [False, True, False, True, False]  # c0 cut off, then c1's whole pulse


def _two_pulses_5ms_apart(wiring: str, write: Callable) -> Tuple[list, list, bool]:
    """Two 40 ms pulses 5 ms apart on a gate pin whose every write goes through
    write(real_write, value) -> the pulses as reported, the pin's states from just before
    the first, and the pin's state once both ended (before LineIO's close drives it off)."""
    f = MockFactory()
    cfg = GpioConfig(energise_to=wiring, delay_ms=100, pulse_ms=40)
    seen: list = []
    with LineIO(cfg, f, on_pulse_done=seen.append) as io:
        io.pulses.on_crash = lambda e: None
        pin = f.pin(cfg.ejector_pin)
        real = pin._set_state
        pin._set_state = lambda value: write(real, value)
        pin.clear_states()
        t0 = time.monotonic() + 0.1
        io.pulses.schedule(t0, "first")
        io.pulses.schedule(t0 + 0.005, "second")
        assert io.pulses.wait_idle(2)
        states, end = pin.states, pin.state
    return seen, states, end


@pytest.mark.parametrize("wiring", ["reject", "accept"])
def test_a_pulse_due_while_the_gate_is_on_rides_on_it(wiring: str) -> None:
    """Two pulses 5 ms apart, 40 ms long, with a gate driver whose writes take 30 ms (a
    slow or loaded unit): the second came due while the first held the gate on. Fired
    apart, the second waited for the first to end and its write, was judged late and
    reported missed - with the reject wiring, a container reported as passed while the
    gate was on at its time. Judged on the pin: the gate goes on once, stays on until the
    second pulse's full length, and both pulses are reported fired."""

    def slow(real, value):
        real(value)
        time.sleep(0.03)

    seen, states, _ = _two_pulses_5ms_apart(wiring, slow)
    assert [(p.tag, p.state) for p in seen] == [("first", "fired"), ("second", "fired")]
    assert [s.state for s in states] == [False, True, False]  # one pulse, never off between
    assert states[2].timestamp >= 0.005 + 0.040 - 0.002  # on through the second's length


def test_a_pulse_long_overdue_holds_up_none_riding_behind_it() -> None:
    """While the first pulse holds the gate on, a pulse comes in due a second ago (long
    missed) and another is due 10 ms after the first: the overdue one is reported missed,
    and the other still rides on the gate (before, the overdue one at the head of the
    queue stopped it riding: the gate went off and on again for it)."""
    f = MockFactory()
    cfg = GpioConfig(delay_ms=200, pulse_ms=50)
    seen: list = []
    with LineIO(cfg, f, on_pulse_done=seen.append) as io:
        pin = f.pin(cfg.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic() + 0.05
        io.pulses.schedule(t0, "first")
        io.pulses.schedule(t0 + 0.01, "rider")
        end = time.monotonic() + 2
        while not pin.state and time.monotonic() < end:
            time.sleep(0.001)
        io.pulses.schedule(t0 - 1.0, "overdue")
        assert io.pulses.wait_idle(2)
        states = [s.state for s in pin.states]
    assert sorted((p.tag, p.state) for p in seen) == [
        ("first", "fired"),
        ("overdue", "missed"),
        ("rider", "fired"),
    ]
    assert states == [False, True, False]  # on once, through the rider's length


def test_a_crash_ending_a_pulse_reports_the_pulses_riding_on_it() -> None:
    """The driver raises SystemExit on the write that ends a pulse another rode on: the
    output ends off and both pulses are reported failed (none left 'on' unreported)."""
    offs = {"n": 0}

    def exit_on_first_off(real, value):
        real(value)
        if not value:
            offs["n"] += 1
            if offs["n"] == 1:
                raise SystemExit("the driver exited")

    seen, _, end = _two_pulses_5ms_apart("reject", exit_on_first_off)
    assert end is False
    assert [(p.tag, p.state) for p in seen] == [("first", "error"), ("second", "error")]
    assert all("pulse thread crashed" in p.error for p in seen)


def test_a_pulse_without_a_finite_time_is_refused() -> None:
    f = MockFactory()
    with LineIO(GpioConfig(delay_ms=50, pulse_ms=10), f) as io:
        with pytest.raises(ValueError, match="not finite"):
            io.release("c0", float("nan"), None)
        assert io.release("c1", time.monotonic(), None)  # the next one still fires
        assert io.pulses.wait_idle(1)
        assert [(p.tag, p.state) for p in io.pulses.done] == [("c1", "fired")]


def test_pulse_queue_order_cancel_and_a_pulse_taken_by_the_supervisor() -> None:
    """Taken in time order, cancelled ones skipped; a pulse the supervisor took as missed
    (`take_due`, a gate write hung) between the pulse thread's look at the head and its take
    leaves it nothing to take, not an exception that would crash the pulse thread."""
    q = PulseQueue()
    c, a, b = q.push(3.0, "c"), q.push(1.0, "a"), q.push(2.0, "b")
    assert q.cancel(a) and not q.cancel(a)
    assert q.next_at() == 2.0 and q.pending() == 2 and q.pending_tags() == {"b", "c"}
    assert q.take_next() is b and b.state == "on" and not q.cancel(b)
    assert q.cancel_near(3.05, 0.1) == [c] and q.next_at() is None
    d = q.push(4.0, "d")
    assert q.next_at() == 4.0  # the pulse thread looks: d is due
    assert q.take_due(4.0) == [d]  # the supervisor takes it as missed meanwhile
    assert q.take_next() is None and q.pending() == 0


def test_close_cancels_pending_accepts_and_leaves_output_off() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=200, pulse_ms=20)
    io = LineIO(cfg, f)
    pin = f.pin(cfg.ejector_pin)
    pin.clear_states()
    assert io.release("c0", time.monotonic(), None)
    io.close()  # the process stops before the gate: nothing energises it, the container is rejected
    time.sleep(0.3)
    assert len(pin.states) == 1 and not pin.states[0].state
    io.close()  # idempotent


def test_alarm_and_release_of_pins() -> None:
    f = MockFactory()
    cfg = GpioConfig()
    with LineIO(cfg, f) as io:
        io.write_alarm(True)
        assert f.pin(cfg.alarm_pin).state
    with LineIO(cfg, f):  # released on exit: the pins can be claimed again
        pass


def test_bad_config() -> None:
    with pytest.raises(GpioError, match="energise_to"):
        LineIO(GpioConfig(energise_to="sideways"), MockFactory())
    with pytest.raises(GpioError, match="alarm_energise_to must be one of"):
        LineIO(GpioConfig(alarm_energise_to="healthy"), MockFactory())
    with pytest.raises(GpioError, match="pin_factory is not set"):
        LineIO(GpioConfig())
    with pytest.raises(GpioError, match="no gpiozero pin factory 'nosuch'"):
        load_pin_factory("nosuch")
    assert load_pin_factory("mock") is not None


FB = "GPIO23"


class _WeldedContact(MockPin):
    """A feedback input held high whatever pulls it (a relay welded shut, a short)."""

    def drive_low(self) -> None:
        pass


def _relay(f: MockFactory, cfg: GpioConfig, welds: bool = False) -> MockPin:
    """The gate output wired to a relay whose auxiliary contact drives the feedback input;
    with `welds`, the relay's contacts weld at its first energising write."""
    inj = Injector({"relay_welded": 1.0 if welds else 0.0}, 0)
    gate = f.pin(cfg.ejector_pin, pin_class=FaultyPin, input_pin=f.pin(FB))
    gate.injector = inj
    return gate


def test_gate_feedback_that_follows_passes_every_pulse() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=100, pulse_ms=30, gate_feedback_pin=FB)
    gate, stuck = _relay(f, cfg), []
    with LineIO(cfg, f) as io:
        io.pulses.on_stuck = stuck.append
        t0 = time.monotonic()
        assert io.release("a", t0, None) and io.release("b", t0 + 0.1, None)
        assert io.pulses.wait_idle(1.0)
        time.sleep(0.05)  # the post-pulse check and an idle check
        done = [p.state for p in io.pulses.done]
    assert done == ["fired", "fired"] and stuck == [] and io.pulses.counts["stuck"] == 0
    assert [s.state for s in f.pin(FB).states][-4:] == [True, False, True, False]
    assert [s.state for s in gate.states][-4:] == [True, False, True, False]


def test_a_pulse_the_gate_did_not_follow_is_a_failed_release() -> None:
    f = MockFactory()  # the feedback input is wired to nothing: it stays off
    cfg = GpioConfig(delay_ms=80, pulse_ms=30, gate_feedback_pin=FB)
    with LineIO(cfg, f) as io:
        pin = f.pin(cfg.ejector_pin)
        pin.clear_states()
        assert io.release("a", time.monotonic(), None)
        assert io.pulses.wait_idle(1.0)
        (p,) = list(io.pulses.done)
        states = [s.state for s in pin.states]
    assert p.state == "error" and "gate feedback stayed off" in (p.error or "")
    assert states == [False, True, False]  # and the output was driven off again


def test_a_welded_relay_raises_the_stuck_alarm_after_its_pulse() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=80, pulse_ms=30, gate_feedback_pin=FB)
    gate, stuck = _relay(f, cfg, welds=True), []
    with LineIO(cfg, f) as io:
        io.pulses.on_stuck = stuck.append
        gate.clear_states()
        assert io.release("a", time.monotonic(), None)
        assert io.pulses.wait_idle(1.0)
        time.sleep(0.35)  # idle checks too: reported once per episode
        (p,) = list(io.pulses.done)
        energised = gate.state and f.pin(FB).state
    assert p.state == "fired" and energised  # released, then the contacts stayed shut
    assert len(stuck) == 1 and "gate stuck energised after the pulse for a" in stuck[0]


def test_a_gate_energised_while_no_pulse_is_on_raises_the_stuck_alarm() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=80, pulse_ms=30, gate_feedback_pin=FB)
    stuck: list = []
    with LineIO(cfg, f) as io:
        io.pulses.on_stuck = stuck.append
        f.pin(FB).drive_high()  # a short on the gate line, no pulse scheduled
        end = time.monotonic() + 2.0
        while not stuck and time.monotonic() < end:
            time.sleep(0.01)
        f.pin(FB).drive_low()
    assert len(stuck) == 1 and "while no pulse was on" in stuck[0]


def test_preflight_fails_a_gate_feedback_on_with_the_output_off() -> None:
    from edge.config import LineConfig
    from edge.preflight import check_gpio

    cfg = LineConfig(gpio=GpioConfig(pin_factory="lgpio", gate_feedback_pin=FB))
    f = MockFactory()
    assert check_gpio(cfg, f).status == "ok"
    # The reject wiring: a dead unit passes containers, its alarm output must show it.
    for alarm, status in (("alarm", "warn"), ("ready", "ok"), ("heartbeat", "ok")):
        g = dataclasses.replace(cfg.gpio, energise_to="reject", alarm_energise_to=alarm)
        c = check_gpio(dataclasses.replace(cfg, gpio=g), MockFactory())
        assert c.status == status and f"alarm output {g.alarm_pin}: " in c.detail
    f = MockFactory()
    f.pin(FB, pin_class=_WeldedContact).drive_high()
    c = check_gpio(cfg, f)
    assert c.status == "fail" and "gate feedback GPIO23 is on with the gate output off" in c.detail
