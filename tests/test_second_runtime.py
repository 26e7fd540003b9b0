"""A second runtime started beside a running one (an engineer's `fod run` by hand on a
unit whose service runs) on the same audit folder and pins: refused at the folder's writer
lock before it claims a pin, judged at pins that two pin factories share, as two
processes share a GPIO line through sysfs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.audit import AuditError

from .filepin import DIR_ENV, FilePin, level, levels
from .test_export import exported  # noqa: F401
from .test_runtime import _cfg, bundle  # noqa: F401

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
        end = time.monotonic() + 30
        while not level(tmp_path / "pins", ALARM):  # the ready output: the runtime runs
            assert time.monotonic() < end, "the ready output never came on"
            time.sleep(0.01)
        seen = {pin: levels(tmp_path / "pins", pin) for pin in (GATE, ALARM)}
        second = line_runtime(cfg, MockFactory(pin_class=FilePin))
        with pytest.raises(AuditError, match="written by another process"), second:
            pass
        assert {pin: levels(tmp_path / "pins", pin) for pin in (GATE, ALARM)} == seen
        assert level(tmp_path / "pins", ALARM)
