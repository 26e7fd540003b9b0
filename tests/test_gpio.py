"""The reject path on gpiozero's MockFactory: pulse timing, both wirings, alarm, cleanup."""

from __future__ import annotations

import time

import pytest
from gpiozero.pins.mock import MockFactory

from edge.gpio import GpioConfig, GpioError, LineIO, load_pin_factory

TOL = 0.03  # s: thread wake-up jitter on a loaded 2-core CI machine


def _pin(factory: MockFactory, name: str):
    return factory.pin(name)


def test_reject_pulse_at_trigger_plus_delay() -> None:
    f = MockFactory()
    cfg = GpioConfig(delay_ms=150, pulse_ms=40)
    with LineIO(cfg, f) as io:
        pin = _pin(f, cfg.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic()
        assert io.act(t0, reject=True)
        assert not io.act(t0 + 0.01, reject=False)  # energise-to-reject: accept does nothing
        time.sleep(0.35)
        ((_, actual),) = io.pulses.fired
        assert abs(actual - (t0 + 0.150)) < TOL
        states = pin.states
        # off (initial) -> on after ~150 ms -> off after ~40 ms; exactly these changes
        assert len(states) == 3
        assert [s.state for s in states] == [False, True, False]
        # MockPin timestamps are deltas since the previous change (clear_states, just before t0)
        assert abs(states[1].timestamp - 0.150) < TOL
        assert abs(states[2].timestamp - 0.040) < TOL


def test_pulses_in_deadline_order() -> None:
    f = MockFactory()
    with LineIO(GpioConfig(delay_ms=0, pulse_ms=5), f) as io:
        t0 = time.monotonic()
        for dt in (0.2, 0.05, 0.12):
            io.pulses.schedule(t0 + dt)
        time.sleep(0.35)
        assert [round(s - t0, 2) for s, _ in io.pulses.fired] == [0.05, 0.12, 0.2]
        assert all(a >= s for s, a in io.pulses.fired)


def test_energise_to_accept_rejects_when_stopped() -> None:
    f = MockFactory()
    cfg = GpioConfig(energise_to="accept", delay_ms=200, pulse_ms=20)
    io = LineIO(cfg, f)
    pin = _pin(f, cfg.ejector_pin)
    pin.clear_states()
    assert io.act(time.monotonic(), reject=False)  # accept: the gate must be energised to pass
    assert not io.act(time.monotonic(), reject=True)
    io.close()  # the process stops before the gate: nothing energises it, the container is rejected
    time.sleep(0.3)
    assert [s.state for s in pin.states] == [False]
    io.close()  # idempotent


def test_alarm_and_release(tmp_path) -> None:
    f = MockFactory()
    cfg = GpioConfig()
    with LineIO(cfg, f) as io:
        io.set_alarm(True)
        assert _pin(f, cfg.alarm_pin).state
    # released on exit: the pins can be claimed again
    with LineIO(cfg, f):
        pass


def test_bad_config() -> None:
    with pytest.raises(GpioError, match="energise_to"):
        LineIO(GpioConfig(energise_to="sideways"), MockFactory())
    with pytest.raises(GpioError, match="no gpiozero pin factory 'nosuch'"):
        load_pin_factory("nosuch")
    assert load_pin_factory("mock") is not None


def test_stale_pulse_is_not_fired() -> None:
    f = MockFactory()
    with LineIO(GpioConfig(delay_ms=0, pulse_ms=10), f) as io:
        io.pulses.schedule(time.monotonic() - 0.5)  # the container passed the gate 0.5 s ago
        time.sleep(0.1)
        assert io.pulses.fired == [] and len(io.pulses.missed) == 1
        assert [s.state for s in f.pin(GpioConfig().ejector_pin).states] == [False]
