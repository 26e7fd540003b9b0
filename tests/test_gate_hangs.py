"""A gate write that blocks in the driver and lands late, judged at the pins and in the
audit: the gate goes off at once instead of holding a pulse at the wrong time, and every
container whose gate time the output may have been on in goes on record as possibly
passed, with the alarm (accept wiring). The late write itself no software can take back;
one that hangs is on record while it hangs. A gate left energised between pulses:
tests/test_gate_energised.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, List, Set, Tuple

import pytest
from gpiozero.pins.mock import MockConnectedPin, MockFactory, MockPin

import edge.faults
from edge.app import line_runtime
from edge.faults import FaultyPin, Injector
from edge.pulses import PulseScheduler
from edge.runtime import Job
from edge.simulate import Physical, judge, pin_intervals

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows


class BlockingDevice:
    """A gate output whose next energising (`on_block`) or de-energising (`off_block`) write
    blocks for that many seconds before it lands; records (time, state) as it lands."""

    def __init__(self) -> None:
        self.on_block = self.off_block = 0.0
        self.log: List[Tuple[float, bool]] = []

    def on(self) -> None:
        block, self.on_block = self.on_block, 0.0
        time.sleep(block)
        self.log.append((time.monotonic(), True))

    def off(self) -> None:
        block, self.off_block = self.off_block, 0.0
        time.sleep(block)
        self.log.append((time.monotonic(), False))


def _run(device: BlockingDevice, pulse_s: float, due: List[Tuple[float, str]], ends: int):
    """Pulses (seconds from now, tag) on a scheduler driving `device`, until `ends` of them
    have ended (the rest cancelled at close) -> (their start time, done, stray spans)."""
    done: List[Any] = []
    strays: List[Tuple[float, float, Set[str], List[str]]] = []
    pulses = PulseScheduler(device, pulse_s, on_done=done.append)
    # What had been reported done when the span came: the missed ones must come first.
    pulses.on_stray = lambda t0, t1, settled, cause: strays.append(
        (t0, t1, settled, [p.tag for p in done])
    )
    at = time.monotonic() + 0.05
    try:
        for dt, tag in due:
            pulses.schedule(at + dt, tag)
        assert _wait_for(lambda: len(done) >= ends, 5)
    finally:
        pulses.close()
    return at, done, strays


def test_a_gate_write_that_lands_late_goes_off_at_once_and_its_span_is_reported() -> None:
    """The energising write for c0 blocks 0.5 s, past c0's window (0.2 s pulse): the gate
    must not then be held on for a pulse length at another container's time. It goes off
    at the next write, c0's pulse is missed (its container was not released), and the span
    from the write's call to the off is handed on with nothing settled in it but the pulse
    still to come (c2)."""
    device = BlockingDevice()
    device.on_block = 0.5
    # c1 is due while the write blocks (missed), c2 is still to come
    at, done, strays = _run(device, 0.2, [(0.0, "c0"), (0.3, "c1"), (5.0, "c2")], 2)
    (on_t, on), (off_t, off) = device.log[:2]
    assert on and not off and off_t - on_t < 0.1  # not the 0.2 s pulse
    assert [(p.tag, p.state) for p in done] == [("c0", "missed"), ("c1", "missed")]
    assert "after its time" in done[0].error
    (t0, t1, settled, before), *_ = strays
    assert t0 <= at + 0.05 and t1 >= off_t - 1e-3 and settled == {"c2"}
    assert before == ["c0", "c1"]  # their own rows come before the span's


def test_an_off_that_blocks_reports_the_gate_held_on() -> None:
    """The write that ends c0's pulse blocks 0.4 s: the gate stays on through c1's time.
    c0 fired as planned (settled); c1, due while the off blocked, is missed first, then the
    span is reported without c0."""
    device = BlockingDevice()
    device.off_block = 0.4
    at, done, strays = _run(device, 0.05, [(0.0, "c0"), (0.2, "c1")], 2)
    assert [(p.tag, p.state) for p in done] == [("c0", "fired"), ("c1", "missed")]
    (t0, t1, settled, before), *_ = strays
    assert t0 <= at + 0.05 < at + 0.2 < t1 and settled == {"c0"} and before == ["c0", "c1"]


def test_a_pulse_on_time_reports_no_span() -> None:
    _, done, strays = _run(BlockingDevice(), 0.05, [(0.0, "c0")], 1)
    assert [p.state for p in done] == ["fired"] and strays == []


class HangingPin(MockConnectedPin):
    """A gate output pin whose next energising (`hang_on`) or de-energising (`hang_off`)
    write blocks that long in the driver, then lands."""

    hang_on = hang_off = 0.0
    blocked = threading.Event()

    def _set_state(self, value: Any) -> None:
        if value and self.hang_on:
            block, self.hang_on = self.hang_on, 0.0
            self.blocked.set()
            time.sleep(block)
        elif not value and self.hang_off:
            block, self.hang_off = self.hang_off, 0.0
            self.blocked.set()
            time.sleep(block)
        super()._set_state(value)


def _submit_at(rt: Any, offsets: Tuple[float, ...], frames: List[Any]) -> List[float]:
    """Container c{i} triggered `offsets[i]` s from now with `frames[i]` -> trigger times."""
    ts = [time.monotonic() + dt for dt in offsets]
    for i, (t, fr) in enumerate(zip(ts, frames)):
        time.sleep(max(0.0, t - time.monotonic()))
        rt.submit(Job(f"c{i}", t, fr()))
    return ts


def _judged(on: Any, rows: Any, ts: List[float], cfg: Any) -> Tuple[List[Physical], Any]:
    """The containers c{i} (triggered at `ts`) as the gate model reads the pin history `on`,
    with their last audit rows -> (containers, `judge`'s summary)."""
    g = cfg.gpio
    edges = {f"c{i}": t for i, t in enumerate(ts)}
    cs = list(gated(edges, on, g.delay_ms / 1000, g.pulse_ms / 1000, g.energise_to).values())
    for c in cs:
        c.audit, c.fault = rows[c.id][0], rows[c.id][1]
        c.faulted = c.fault is not None
    return cs, judge(cs)


def _line(bundle: Path, tmp_path: Path, wiring: str, pin_class: type) -> Tuple[Any, ...]:
    """A line config for `wiring` where only faults reject (min_evidence 99), a MockFactory
    whose pins are `pin_class`, its gate pin, and the frames of a container that gets the
    wiring's pulse (accept wiring: an accept) and of one that gets none."""
    cfg = _cfg(bundle, tmp_path, gpio={"energise_to": wiring}, decision={"min_evidence": 99.0})
    f = MockFactory(pin_class=pin_class)
    good, bad = _frames, (lambda: lambda: None)
    pulsed, quiet = (good, bad) if wiring == "accept" else (bad, good)
    return cfg, f, f.pin(cfg.gpio.ejector_pin), pulsed, quiet


@pytest.mark.parametrize(
    "wiring, write",
    [("accept", "on"), ("accept", "off"), ("reject", "on")],
    ids=["accept-on", "accept-off", "reject-on"],
)
def test_a_blocked_gate_write_puts_the_containers_it_may_have_passed_on_record(
    bundle: Path, tmp_path: Path, wiring: str, write: str
) -> None:
    """c0 and c1 half a second apart; the gate write of c0's pulse blocks half a second, so
    it lands (energising) or holds the gate on (the off) at c1's gate time. Accept wiring:
    c0 accepted, c1 rejected (no frames) - c1 may physically pass through c0's late write,
    which nothing on the unit can undo; the audit must then say so (its last row: passed,
    `gate_uncertain`) and the alarm go up naming it. Reject wiring: c0 rejected, c1
    accepted - c0's reject pulse lands late, so c0 passed (on record, alarm) and c1 may
    have been ejected. Judged by the gate model from the pin history: the audit never says
    rejected where the gate passed; it may say `may have passed` where the gate rejected."""
    accept = wiring == "accept"
    cfg, f, gate, pulsed, quiet = _line(bundle, tmp_path, wiring, HangingPin)
    delay, pulse, gap = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000, 0.5
    HangingPin.blocked.clear()
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        t_clear = time.monotonic()
        setattr(gate, f"hang_{write}", gap)
        t0 = time.monotonic()
        rt.submit(Job("c0", t0, pulsed()))
        t1 = t0 + gap  # the write lands at c1's gate time (or just after: c0's pulse fired late)
        time.sleep(max(0.0, t1 - time.monotonic()))
        rt.submit(Job("c1", t1, quiet()))
        assert _wait_for(HangingPin.blocked.is_set, delay + 5)
        assert rt.drain(10) and rt.io.pulses.wait_idle(5)
        assert _wait_for(lambda: rt.alarm, 5)
        rt.drain(5)
        on, reasons = pin_intervals(gate, t_clear), rt.alarm_reasons
    rows = _rows(tmp_path)
    cs, s = _judged(on, rows, [t0, t1], cfg)
    assert s["audit_disagrees"] == 0, (on, rows)
    assert rows["c1"][:2] == ("accept", "gate_uncertain"), rows  # its worst: passed
    if write == "on":  # the late write: off again at once, not held for a pulse length
        assert [b - a < pulse for a, b in on] == [True], on
        assert rows["c0"][:2] == ("accept", "gate_uncertain")
    else:  # c0 released in its window, the gate held on to c1's time
        assert cs[0].passed and rows["c0"][:2] == ("accept", None)
    if accept:
        assert any("c1" in r and "may have passed" in r for r in reasons), reasons
    else:
        assert any("c0: reject pulse missed" in r for r in reasons), reasons


def test_the_simulators_blocked_write_lands_when_the_block_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`fod simulate --faults gpio_hang=P`: the gate pin's write blocks for its drawn time,
    then lands (the pin's history dates it there), counted as injected."""
    monkeypatch.setattr(edge.faults, "HANG_S", (0.2, 0.2))
    f = MockFactory(pin_class=FaultyPin)
    gate = f.pin("GPIO17")
    gate.function = "output"
    gate.injector = Injector({"gpio_hang": 1.0}, 0)
    gate.clear_states()
    t_clear = time.monotonic()
    gate.state = True
    t_back = time.monotonic()
    ((on, _),) = pin_intervals(gate, t_clear)
    assert on - t_clear >= 0.2 and t_back - t_clear >= 0.2
    assert gate.injector.injected["gpio_hang"] == 1


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_write_hung_in_the_driver_is_on_record_while_it_hangs(
    bundle: Path, tmp_path: Path, wiring: str
) -> None:
    """c0's gate write hangs in the driver for 3 s (a write that may never come back; the
    pulse thread can report nothing meanwhile). c1, 0.4 s behind, gets a pulse (accept
    wiring: accepted; reject: rejected) that no thread fires in its window; c2, 0.8 s
    behind, gets none. While the write still hangs, the supervisor puts c1's pulse on
    record as missed and both c1 and c2 as possibly passed (the write may land, or have
    landed, energising the gate at their times), the alarm naming them; with the reject
    wiring c1's missed reject pulse is on record as passed. Once the write lands, the gate
    model's reading of the pin history agrees with the audit."""
    accept = wiring == "accept"
    cfg, f, gate, pulsed, quiet = _line(bundle, tmp_path, wiring, HangingPin)
    delay = cfg.gpio.delay_ms / 1000
    HangingPin.blocked.clear()
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        t_clear = time.monotonic()
        gate.hang_on = 3.0
        ts = _submit_at(rt, (0.0, 0.4, 0.8), [pulsed, pulsed, quiet])
        assert _wait_for(HangingPin.blocked.is_set, delay + 5)
        landed = ts[0] + delay + 3.0  # the hung write comes back about then

        def uncertain() -> bool:
            rows = _rows(tmp_path)
            return all(rows.get(c, ("",) * 2)[1] == "gate_uncertain" for c in ("c1", "c2"))

        assert _wait_for(uncertain, landed - time.monotonic() - 0.3), _rows(tmp_path)
        assert time.monotonic() < landed - 0.2 and not gate.state  # the write still hangs
        reasons_while_hung = list(rt.alarm_reasons)
        time.sleep(max(0.0, landed + 0.3 - time.monotonic()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(5)
        rt.drain(5)
        on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    ((a, _),) = on
    assert a >= landed - 0.1, on  # the write landed when it came back
    assert _judged(on, rows, ts, cfg)[1]["audit_disagrees"] == 0, (on, rows)
    assert "stuck in the driver" in rows["c2"][2]
    if accept:
        for c in ("c1", "c2"):
            assert any(f"{c} may have passed" in r for r in reasons_while_hung), reasons_while_hung
    else:
        assert any("c1: reject pulse missed" in r for r in reasons_while_hung), reasons_while_hung


class HangingReadPin(MockPin):
    """A gate feedback input whose next read while it reads `hang_at` blocks `hang` s."""

    hang, hang_at = 0.0, True
    blocked = threading.Event()

    def _get_state(self) -> Any:
        if self.hang and self._state == self.hang_at:
            block, self.hang = self.hang, 0.0
            self.blocked.set()
            time.sleep(block)
        return super()._get_state()


def _feedback_line(bundle: Path, tmp_path: Path) -> Tuple[Any, ...]:
    """Accept wiring, only faults reject, the gate feedback wired to a contact that follows
    the gate (`HangingReadPin`, not hung yet) -> cfg, factory, gate pin, feedback pin, the
    gate delay."""
    cfg = _cfg(
        bundle,
        tmp_path,
        gpio={"energise_to": "accept", "gate_feedback_pin": "GPIO23"},
        decision={"min_evidence": 99.0},
    )
    f = MockFactory()
    fb = f.pin("GPIO23", pin_class=HangingReadPin)
    gate = f.pin(cfg.gpio.ejector_pin, pin_class=MockConnectedPin, input_pin=fb)
    HangingReadPin.blocked.clear()
    return cfg, f, gate, fb, cfg.gpio.delay_ms / 1000


def test_a_feedback_read_hung_in_a_pulse_holds_the_gate_on_record(
    bundle: Path, tmp_path: Path
) -> None:
    """The feedback read at the end of c0's accept pulse hangs 3 s, the output still on: the
    gate stays energised through c1's gate time (0.4 s behind; rejected: no frames), and c1
    physically passes. While the read still hangs, c1 must be on record as possibly
    passed, the alarm naming it; judged from the pins, the audit agrees."""
    cfg, f, gate, fb, delay = _feedback_line(bundle, tmp_path)
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        t_clear = time.monotonic()
        fb.hang, fb.hang_at = 3.0, True
        ts = _submit_at(rt, (0.0, 0.4), [_frames, lambda: lambda: None])
        assert _wait_for(HangingReadPin.blocked.is_set, delay + 5)
        back = ts[0] + delay + 3.0  # the read comes back about then

        def c1_on_record() -> bool:
            return _rows(tmp_path).get("c1", ("",) * 2)[1] == "gate_uncertain"

        assert _wait_for(c1_on_record, back - time.monotonic() - 0.3), _rows(tmp_path)
        assert time.monotonic() < back - 0.2 and gate.state  # still hung, the gate on
        reasons_while_hung = list(rt.alarm_reasons)
        time.sleep(max(0.0, back + 0.3 - time.monotonic()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(5)
        on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    cs, s = _judged(on, rows, ts, cfg)
    assert cs[1].passed and s["audit_disagrees"] == 0, (on, rows)
    assert "gate feedback read stuck in the driver" in rows["c1"][2], rows
    assert any("c1 may have passed" in r for r in reasons_while_hung), reasons_while_hung


def test_a_feedback_read_hung_between_pulses_misses_the_pulses_on_record(
    bundle: Path, tmp_path: Path
) -> None:
    """A feedback read between pulses (the output off) hangs 3 s from just before c0's gate
    time: c0's accept pulse cannot fire. While the read still hangs, c0's last row must say
    rejected (its release missed); the output stayed off, so nothing is on record as
    possibly passed. Judged from the pins, the audit agrees."""
    cfg, f, gate, fb, delay = _feedback_line(bundle, tmp_path)
    with line_runtime(cfg, f) as rt:
        gate.clear_states()
        t_clear = time.monotonic()
        (t0,) = _submit_at(rt, (0.0,), [_frames])
        assert rt.drain(5) and _rows(tmp_path)["c0"][0] == "accept"
        time.sleep(max(0.0, t0 + delay - 0.3 - time.monotonic()))
        fb.hang, fb.hang_at = 3.0, False
        assert _wait_for(HangingReadPin.blocked.is_set, 1)
        back = time.monotonic() + 3.0

        def c0_missed() -> bool:
            return _rows(tmp_path)["c0"][0] == "reject"

        assert _wait_for(c0_missed, back - time.monotonic() - 0.3), _rows(tmp_path)
        assert time.monotonic() < back - 0.2  # the read still hangs
        time.sleep(max(0.0, back + 0.3 - time.monotonic()))
        assert rt.io.pulses.wait_idle(5)
        on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    assert on == [] and rows["c0"][:2] == ("reject", "late"), (on, rows)
    assert "gate feedback read" in rows["c0"][2], rows
    assert _judged(on, rows, [t0], cfg)[1]["audit_disagrees"] == 0
