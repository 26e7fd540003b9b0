"""The alarm output when its own write fails: the alarm is what stops a line whose gate the
unit no longer trusts, so a failed write is written again until the pin is on, and the
failure is on record in the audit folder's events. Judged at the pin."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.alarm import PIN_RETRY_S
from edge.app import line_runtime
from edge.events import EVENTS
from edge.runtime import Job
from edge.simulate import pin_intervals

from .test_export import exported  # noqa: F401
from .test_gate_hangs import HangingPin
from .test_gate_writes import FlakyPin
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows, bundle  # noqa: F401


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
    assert any("alarm output on after 3 failed writes" in w for w in what), events


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
