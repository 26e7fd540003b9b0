"""The gate output's writes failing, judged at the pins and in the audit: a write that
raises is written again inside its pulse's window, an off that fails leaves the release
standing and the gate reported stuck, and a reject pulse never written is on record as
passed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.faults import FaultyPin, Injector, audit_authorizer
from edge.pin_calls import GATE_WRITE_TRIES
from edge.pulses import PulseScheduler
from edge.runtime import Job

from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows


class FlakyPin(FaultyPin):
    """A gate output whose next `fails` energising writes, and `off_fails` de-energising
    writes, raise (EBUSY from the chardev)."""

    fails = off_fails = 0

    def _set_state(self, value: Any) -> None:
        if value and self.fails > 0:
            self.fails -= 1
            raise OSError(16, "Device or resource busy")
        if not value and self.off_fails > 0:
            self.off_fails -= 1
            raise OSError(16, "Device or resource busy")
        super()._set_state(value)


@pytest.mark.parametrize(
    "wiring, fails",
    [("reject", 1), ("accept", 2), ("reject", 10**6), ("accept", 10**6)],
    ids=["reject-once", "accept-twice", "reject-always", "accept-always"],
)
def test_a_gate_write_that_fails_is_written_again_in_its_window(
    bundle: Path, tmp_path: Path, wiring: str, fails: int
) -> None:
    """The gate output's write raises at the pulse, `fails` times in a row. With the reject
    wiring c0 (no frames: rejected) must be ejected, with the accept wiring c0 (accepted)
    released: the write is tried again at once, so a write failing once or twice still
    pulses the gate in its window and the last row stands. Failing every try, the pulse
    did not happen: the reject-wired container passed (on record as such, the alarm up at
    once), the accept-wired one is rejected (one fault: under `alarm_faults`)."""
    reject = wiring == "reject"
    cfg = _cfg(bundle, tmp_path, gpio={"energise_to": wiring}, decision={"min_evidence": 99.0})
    f = MockFactory(pin_class=FlakyPin)
    gate = f.pin(cfg.gpio.ejector_pin)
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        gate.fails = fails
        rt.submit(Job("c0", time.monotonic(), (lambda: None) if reject else _frames()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(5)
        pulsed = [s.state for s in gate.states].count(True)
        retried, alarm = rt.io.pulses.counts["retried"], rt.alarm
        metric = rt.metrics.registry.get_sample_value("fod_gate_write_retries_total")
    decision, fault, reason = _rows(tmp_path)["c0"]
    if fails < 10**6:  # within the 3 writes of a pulse
        assert pulsed == 1 and retried == metric == 1 and gate.fails == 0
        assert (decision, fault) == (("reject", "camera_drop") if reject else ("accept", None))
        return
    assert pulsed == 0 and retried == metric == 0 and alarm == reject  # a pass: at once
    assert gate.fails == 10**6 - GATE_WRITE_TRIES  # tried 3 times, not forever
    assert (decision, fault) == (("accept", "gpio_error") if reject else ("reject", "gpio_error"))
    assert "Device or resource busy" in reason


@pytest.mark.parametrize("off_fails", [1, 10**6], ids=["once", "for-good"])
def test_a_gate_that_will_not_switch_off_keeps_the_release_it_made(
    bundle: Path, tmp_path: Path, off_fails: int
) -> None:
    """Accept wiring, c0 accepted and pulsed; the write that ends the pulse raises. The
    gate was on at c0's gate time, so c0 went through the good path on its recorded accept:
    its row must stay the accept (before, the pulse was reported failed and an amending
    reject row said the opposite of the pins). Failing once, the off is written again and
    the gate ends off; failing for good, the gate stays energised and the alarm goes up at
    once (a controller reading the level would pass every container)."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory(pin_class=FlakyPin)
    gate, alarm = f.pin(cfg.gpio.ejector_pin), f.pin(cfg.gpio.alarm_pin)
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        gate.off_fails = off_fails
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(5)
        assert _wait_for(lambda: bool(alarm.state), 10 if off_fails > 1 else 1) == (off_fails > 1)
        states, reasons = [s.state for s in gate.states], list(rt.alarm_reasons)
    assert states[:2] == [False, True]  # energised at the gate: c0 released
    assert _rows(tmp_path)["c0"][:2] == ("accept", None)
    if off_fails == 1:
        assert states == [False, True, False] and not reasons
    else:
        assert states == [False, True] and "not switched off after the pulse for c0" in reasons[0]


def test_a_gate_write_is_not_tried_again_past_its_window() -> None:
    """A write that raises after the pulse's window passed (a driver call that hung for
    longer than a pulse): a pulse now would hit the next container, so it is not written
    again and the pulse is an error."""

    class SlowFailing:
        writes = 0

        def on(self) -> None:
            self.writes += 1
            time.sleep(0.08)  # longer than the 0.05 s pulse
            raise OSError(5, "Input/output error")

        def off(self) -> None:
            pass

    done: list = []
    device = SlowFailing()
    pulses = PulseScheduler(device, 0.05, on_done=done.append)
    try:
        pulses.schedule(time.monotonic() + 0.02, "c0")
        assert pulses.wait_idle(3)
    finally:
        pulses.close()
    assert device.writes == 1 and [p.state for p in done] == ["error"]
    assert "Input/output error" in done[0].error and pulses.counts["retried"] == 0


def test_a_failed_reject_pulse_stays_on_record_as_passed(bundle: Path, tmp_path: Path) -> None:
    """Reject wiring. The camera delivers nothing (a reject), the ejector's pin write raises at
    the gate (the container physically passes), and SQLite denies the first INSERT of the row
    that says so. The pins show no eject, so the audit's last row must say it passed."""
    cfg = _cfg(bundle, tmp_path, gpio={"energise_to": "reject"})
    injector = Injector({"gpio_error": 1.0, "audit_error": 1.0}, 0)
    f = MockFactory(pin_class=FaultyPin)
    ejector = f.pin(cfg.gpio.ejector_pin)
    ejector.injector = injector
    rts: list = []
    auth = audit_authorizer(injector, lambda: rts[0].holding("audit") if rts else None)
    with line_runtime(cfg, f, audit_authorizer=auth) as rt:
        rts.append(rt)
        ejector.clear_states()
        rt.submit(Job("c0", time.monotonic(), lambda: None))
        assert rt.drain(10)  # the reject (no frames) is on record
        injector.draw("c0")  # from now on, c0's next INSERT is denied once
        assert rt.io.pulses.wait_idle(5) and rt.drain(10)  # the gate came and went
        states = [s.state for s in ejector.states]
        assert rt.alarm
    assert states == [False]  # never energised: the container went through the good path
    assert (rt.counts["reject"], rt.counts["passed_unaccepted"]) == (0, 1)  # as the gate did
    assert injector.injected["audit_error"] == 1
    decision, fault, reason = _rows(tmp_path)["c0"]  # rows in seq order: the last one stands
    assert (decision, fault) == ("accept", "gpio_error")
    assert "PASSED the gate" in reason and "first write failed" in reason
