"""The alarm output when its own write fails: the alarm is what stops a line whose gate the
unit no longer trusts, so a failed write is written again until the pin is on, and the
failure is on record in the audit folder's events. The fail-safe "ready" alarm output: on
only while the unit runs with no alarm. Judged at the pin."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Tuple

import pytest
from gpiozero.pins.mock import MockFactory

from edge.alarm import HEARTBEAT_TIMEOUT_S, PIN_RETRY_S
from edge.app import line_runtime
from edge.audit_verify import verify
from edge.events import EVENTS
from edge.runtime import Job
from edge.simulate import alarm_intervals, pin_intervals

from .test_gate_hangs import HangingPin
from .test_gate_writes import FlakyPin
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows


def _no_frames():
    raise OSError("camera gone")  # camera_drop: a fault the alarm counts


def test_a_failed_alarm_write_is_written_again_until_the_pin_is_on(
    bundle: Path, tmp_path: Path
) -> None:
    """One fault raises the alarm (`alarm_faults` 1); the alarm pin's first three writes
    raise. The pin must still end on, within a few retries, with the failure and the
    recovery in the events on record."""
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_faults": 1})
    f = MockFactory()
    pin = f.pin(cfg.gpio.alarm_pin, pin_class=FlakyPin)
    with line_runtime(cfg, f) as rt:
        pin.clear_states()
        pin.fails = 3
        rt.submit(Job("c0", time.monotonic(), _no_frames))
        assert rt.drain(10) and rt.alarm
        assert _wait_for(lambda: pin.state, 3 * PIN_RETRY_S + 3), "the alarm pin stayed off"
        on = [s.state for s in pin.states]
    assert on == [False, True] and pin.fails == 0  # three writes failed, the fourth went on
    events = [json.loads(line) for line in (tmp_path / "audit" / EVENTS).read_text().splitlines()]
    what = [e["detail"] for e in events if e["kind"] == "alarm"]
    assert any("alarm output failed (OSError" in w for w in what), events
    assert any("alarm output shows the alarm after 3 failed writes" in w for w in what), events


def test_an_alarm_write_that_hangs_holds_up_no_container(bundle: Path, tmp_path: Path) -> None:
    """c0's camera is gone (a fault: the alarm, `alarm_faults` 1) and the alarm pin's write
    then blocks 3 s in the driver. c1, triggered 0.3 s after c0 with good frames and a rule
    that accepts them, must still be released at its own gate time (1.5 s after its
    trigger): no stage that decides or releases a container waits on the alarm's driver.
    The alarm pin lands on when the write comes back."""
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_faults": 1}, decision={"min_evidence": 99.0})
    f = MockFactory()
    alarm = f.pin(cfg.gpio.alarm_pin, pin_class=HangingPin)
    alarm.hang_on = 3.0
    delay = cfg.gpio.delay_ms / 1000
    with line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        t0 = t_clear = time.monotonic()
        rt.submit(Job("c0", t0, _no_frames))
        time.sleep(0.3)
        t1 = time.monotonic()
        rt.submit(Job("c1", t1, _frames()))
        assert _wait_for(lambda: len(gate.states) >= 3, delay + 2), "c1 was not released"
        on = pin_intervals(gate, t_clear)
        assert _wait_for(lambda: alarm.state, 5)
    assert len(on) == 1 and abs(on[0][0] - (t1 + delay)) < 0.2, (on, t1 + delay)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "camera_drop") and rows["c1"][:2] == ("accept", None)


def _states(pin) -> list:
    return [st.state for st in pin.states]


def test_the_ready_output_is_on_only_while_the_unit_runs_with_no_alarm(
    bundle: Path, tmp_path: Path
) -> None:
    """`gpio.alarm_energise_to = "ready"`: the output is energised once the runtime runs and
    goes off on the alarm (here one fault, `alarm_faults` 1) and at every end, so that a unit
    that stopped, died or lost its cable shows the alarm (the pin's pull-down). A clean run
    ends with one on-interval and no alarm by the simulator's reading; a run with the fault
    drops the pin at the fault, while the runtime still runs."""
    for fault in (False, True):
        cfg = _cfg(
            bundle, tmp_path / str(fault), gpio={"alarm_faults": 1, "alarm_energise_to": "ready"}
        )
        f = MockFactory()
        pin = f.pin(cfg.gpio.alarm_pin)
        t_clear = time.monotonic()
        with line_runtime(cfg, f) as rt:
            assert _wait_for(lambda: pin.state, 2), "the ready output never came on"
            rt.submit(Job("c0", time.monotonic(), _no_frames if fault else _frames()))
            assert rt.drain(10) and rt.alarm == fault
            if fault:
                assert _wait_for(lambda: not pin.state, 2), "the alarm left the ready output on"
            else:
                time.sleep(0.2)
                assert pin.state  # no alarm: still ready
            t_end = time.monotonic()
        assert pin.state is False  # closed: not inspecting, the alarm shown
        assert _states(pin)[-2:] == [True, False] and _states(pin).count(True) == 1
        alarms = alarm_intervals(pin, t_clear, t_end, "ready")
        assert len(alarms) == fault, alarms


def test_a_ready_output_whose_write_fails_at_start_is_written_again(
    bundle: Path, tmp_path: Path
) -> None:
    """The ready output's first writes raise: it must still come on (the unit is running)
    and the failure and the recovery be on record."""
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_energise_to": "ready"})
    f = MockFactory()
    pin = f.pin(cfg.gpio.alarm_pin, pin_class=FlakyPin)
    pin.fails = 2
    with line_runtime(cfg, f) as rt:
        assert _wait_for(lambda: pin.state, 2 * PIN_RETRY_S + 3), "the ready output stayed off"
        assert not rt.alarm and pin.fails == 0
    events = [json.loads(line) for line in (tmp_path / "audit" / EVENTS).read_text().splitlines()]
    what = [e["detail"] for e in events if e["kind"] == "alarm"]
    assert any("alarm output failed (OSError" in w for w in what), events
    assert any("alarm output shows ready after 2 failed writes" in w for w in what), events


def test_alarm_intervals_read_either_alarm_output() -> None:
    """The simulator's reading of the alarm pin: its on-intervals for the "alarm" output; for
    the "ready" output the gaps after it first came on, the close's off not counted, and a
    ready output that never came on the alarm throughout."""
    f = MockFactory()
    pin = f.pin("GPIO5")
    t0 = time.monotonic()
    pin.clear_states()
    for state in (True, False, True):
        time.sleep(0.02)
        pin.drive_high() if state else pin.drive_low()
    time.sleep(0.02)
    t_end = time.monotonic()
    pin.drive_low()  # the close
    assert len(alarm_intervals(pin, t0, t_end, "alarm")) == 2  # on twice, the last cut
    gaps = alarm_intervals(pin, t0, t_end, "ready")
    assert len(gaps) == 1 and t0 < gaps[0][0] < gaps[0][1] < t_end  # the one gap between
    never = f.pin("GPIO6")
    never.clear_states()
    assert alarm_intervals(never, t0, t_end, "ready") == [(t0, float("inf"))]


def test_output_level_by_mode() -> None:
    """What the alarm pin's level means, by `gpio.alarm_energise_to`."""
    from edge.alarm import HEARTBEAT_S, output_level

    on, off = HEARTBEAT_S * 0.5, HEARTBEAT_S * 1.5  # in the first and second half period
    assert [output_level("alarm", r, on) for r in (False, True)] == [False, True]
    assert [output_level("ready", r, on) for r in (False, True)] == [True, False]
    assert [output_level("heartbeat", False, t) for t in (on, off)] == [True, False]
    assert [output_level("heartbeat", True, t) for t in (on, off)] == [False, False]


def _hold_the_gil(seconds: float) -> Tuple[float, float]:
    """Hang the whole process for `seconds`: a native call that keeps the GIL (ctypes'
    PyDLL does not release it), so no other thread runs. -> (when the hang began, how long
    it held). A sleep, not a computation: it lasts as long on a loaded machine."""
    import ctypes

    libc = ctypes.PyDLL(None)  # this process's own symbols, libc's among them
    t = time.monotonic()
    libc.usleep(int(seconds * 1e6))
    return t, time.monotonic() - t


@pytest.mark.parametrize("mode", ["ready", "heartbeat"])
def test_a_process_hung_as_a_whole_shows_the_alarm_only_on_the_heartbeat(
    bundle: Path, tmp_path: Path, mode: str
) -> None:
    """The heartbeat output toggles while the runtime runs with no alarm. The whole process
    then hangs for 1.2 s (no thread runs: nothing can write any pin, nor raise an
    alarm): read as a controller timing the toggles reads it, the heartbeat shows the alarm
    for that time; the ready output stays on through it (its limit: systemd's watchdog ends
    such a process). Afterwards the heartbeat beats again; the runtime raised nothing."""
    # A gate delay longer than the hang: no stage is stale after it, no alarm of the runtime's.
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_energise_to": mode, "delay_ms": 5000})
    f = MockFactory()
    pin = f.pin(cfg.gpio.alarm_pin)
    t_clear = time.monotonic()
    with line_runtime(cfg, f) as rt:
        assert _wait_for(lambda: len(pin.states) >= 3 if mode == "heartbeat" else pin.state, 3)
        time.sleep(0.6)
        beats = len(pin.states)
        t_hang, held = _hold_the_gil(1.2)
        time.sleep(0.6)
        t_end = time.monotonic()
        assert not rt.alarm
    assert held > 2 * HEARTBEAT_TIMEOUT_S, held
    alarms = alarm_intervals(pin, t_clear, t_end, mode)
    if mode == "ready":
        assert alarms == [] and _states(pin)[-2:] == [True, False]  # on through the hang
        return
    assert beats >= 6  # toggled every 0.1 s before the hang
    assert len(alarms) == 1, alarms
    a, b = alarms[0]
    # The heartbeat thread may toggle as the call returns, before `held` is read: 10 ms.
    t_free = t_hang + held - 0.01
    assert t_hang < a < t_hang + HEARTBEAT_TIMEOUT_S + 0.2 and t_free <= b < t_end, (
        alarms,
        t_hang,
        held,
    )


def test_the_heartbeat_stops_steady_off_on_the_alarm(bundle: Path, tmp_path: Path) -> None:
    """A fault raises the alarm (`alarm_faults` 1): the heartbeat stops, steady off, while the
    runtime still runs - one alarm by the controller's reading, none in a clean run."""
    for fault in (False, True):
        cfg = _cfg(
            bundle,
            tmp_path / str(fault),
            gpio={"alarm_faults": 1, "alarm_energise_to": "heartbeat"},
        )
        f = MockFactory()
        pin = f.pin(cfg.gpio.alarm_pin)
        t_clear = time.monotonic()
        with line_runtime(cfg, f) as rt:
            assert _wait_for(lambda: len(pin.states) >= 3, 3), "no heartbeat"
            rt.submit(Job("c0", time.monotonic(), _no_frames if fault else _frames()))
            assert rt.drain(10) and rt.alarm == fault
            time.sleep(2 * HEARTBEAT_TIMEOUT_S)
            t_end = time.monotonic()
            still = pin.state
        assert pin.state is False
        alarms = alarm_intervals(pin, t_clear, t_end, "heartbeat")
        assert len(alarms) == fault, alarms
        if fault:
            assert still is False and alarms[0][1] == float("inf")


def test_evidence_archived_while_the_line_runs_costs_no_record_and_no_alarm(
    bundle: Path, tmp_path: Path
) -> None:
    """QA moves the kept reject images away while the line runs, and each reject's image
    makes room by deleting the oldest kept one (a budget of about two). Every container is
    rejected at the gate and recorded with its image, and the alarm pin never comes on
    (a deletion that failed on a moved image failed the record: 3 such raise the alarm)."""
    cfg = _cfg(
        bundle, tmp_path, decision={"min_evidence": 0.0}, audit={"image_budget_bytes": 600_000}
    )
    archive = tmp_path / "qa"
    archive.mkdir()
    f = MockFactory()
    alarm = f.pin(cfg.gpio.alarm_pin)
    with line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        alarm.clear_states()
        for i in range(6):
            rt.submit(Job(f"c{i}", time.monotonic(), _frames()))
            assert rt.drain(10)
            for png in (cfg.audit.folder / "images").glob("*.png"):
                png.rename(archive / png.name)
        assert rt.io.pulses.wait_idle(5)  # every gate time has passed
        assert not rt.alarm
        gate_states, alarm_states = list(gate.states), list(alarm.states)
    assert not any(st.state for st in gate_states)  # no container released
    assert not any(st.state for st in alarm_states)  # the alarm output never on
    rows = _rows(tmp_path)
    assert sorted(rows) == [f"c{i}" for i in range(6)]
    assert all(r[0] == "reject" and r[1] is None for r in rows.values())
    assert len(list(archive.glob("*.png"))) == 6 and verify(cfg.audit.folder).rows == 6
