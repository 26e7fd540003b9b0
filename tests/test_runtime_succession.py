"""Runtimes on one audit folder, one at a time. A second one started beside a running one
(an engineer's `fod run` by hand on a unit whose service runs) is refused at the folder's
writer lock before it claims a pin, judged at pins that two pin factories share, as two
processes share a GPIO line through sysfs. One that starts after a runtime died (killed,
crashed: its lock file still names it) puts that on record: the containers the dead one
held have no row, and with the reject wiring they passed (the alarm)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.audit import AuditError
from edge.events import EVENTS
from edge.folder_lock import LOCK_FILE

from .filepin import DIR_ENV, FilePin, level, levels
from .test_recorder import _wait_for
from .test_runtime import _cfg

GATE, ALARM = "GPIO17", "GPIO27"


def test_a_second_runtime_touches_no_pin_of_the_running_one(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the second one claimed the pins first (driving the gate and the ready output
    low under the running line: a reject pulse cut short passes a defective container with
    the reject wiring, and the PLC sees the unit stop) and only then met the audit folder."""
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "pins"))
    (tmp_path / "pins").mkdir()
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_energise_to": "ready"})
    with line_runtime(cfg, MockFactory(pin_class=FilePin)):
        # the ready output: the runtime runs (30 s: a bound on a hang, not a timing claim)
        assert _wait_for(lambda: level(tmp_path / "pins", ALARM), 30)
        seen = {pin: levels(tmp_path / "pins", pin) for pin in (GATE, ALARM)}
        second = line_runtime(cfg, MockFactory(pin_class=FilePin))
        with pytest.raises(AuditError, match="written by another process"), second:
            pass
        assert {pin: levels(tmp_path / "pins", pin) for pin in (GATE, ALARM)} == seen
        assert level(tmp_path / "pins", ALARM)


def _events(folder: Path, kind: str = "") -> list:
    """The events on record; without `kind`, all but the runs' `start` events."""
    path = folder / EVENTS
    events = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in events if e["kind"] == kind or (not kind and e["kind"] != "start")]


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_runtime_after_one_that_died_puts_it_on_record(
    bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wiring: str
) -> None:
    """The lock file as a killed runtime leaves it (naming its holder; a SIGKILL leaves
    it so: tests/test_service.py). Accept wiring: an `unclean_end` event, no alarm (what
    it held was rejected at the gate). Reject wiring: the alarm, the ready output off. A
    runtime that closed leaves nothing to report."""
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "pins"))
    (tmp_path / "pins").mkdir()
    cfg = _cfg(bundle, tmp_path, gpio={"alarm_energise_to": "ready", "energise_to": wiring})
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / LOCK_FILE).write_text("pid 4242 since 2026-12-06T05:00:00Z\n")
    with line_runtime(cfg, MockFactory(pin_class=FilePin)) as rt:
        ready = wiring == "accept"  # the ready output on: no alarm
        assert _wait_for(lambda: level(tmp_path / "pins", ALARM) == ready, 30)
        assert rt.alarm == (wiring == "reject")  # = no alarm
    (event,) = _events(audit)
    assert event["kind"] == ("alarm" if wiring == "reject" else "unclean_end")
    assert "pid 4242 since 2026-12-06T05:00:00Z) ended without closing" in event["detail"]
    assert (audit / LOCK_FILE).read_text() == ""  # closed, and the death reported
    with line_runtime(cfg, MockFactory(pin_class=FilePin)) as rt:
        assert _wait_for(lambda: level(tmp_path / "pins", ALARM), 30)
        assert not rt.alarm
    assert len(_events(audit)) == 1 and len(_events(audit, "start")) == 2
