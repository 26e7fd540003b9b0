"""The gate's own faults, judged from the pins: a relay that welds shut (no software can
stop it; the simulated line must come out red), and the gate feedback input that lets the
runtime see what the gate did (a pulse the gate did not follow is a failed release; a gate
energised with the output off raises the alarm)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.runtime import Job
from fod.cli import main

from .test_failsafe import N, _argv
from .test_gpio import _WeldedContact
from .test_runtime import _cfg, _frames, _rows

FB = "GPIO23"


def test_a_welded_gate_relay_turns_the_run_red(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """A fault no software on the unit prevents (here no gate feedback either): the relay welds at
    its first accept pulse and stays energised, so every container behind the first accepted
    one passes, the dropped ones too. The gate model reads that from the pin's history, and
    `fod simulate` exits 1 naming what broke."""
    argv = _argv(bundle, small_set, tmp_path / "sim", "relay_welded=1.0,camera_drop=0.5")
    assert main(argv) == 1
    out, err = capsys.readouterr()
    s = json.loads(out)
    assert s["injected"]["relay_welded"] == 1 and s["faults"]["camera_drop"] < N
    # rejected = the dropped containers before the first accepted one
    assert 0 < s["physically_passed"] < N + 1 and s["passed_faulty"] >= 1
    assert s["passed_faulty"] == s["physically_passed"] - (N - s["faults"]["camera_drop"])
    assert s["audit_disagrees"] == s["passed_faulty"]  # on record rejected, physically passed
    assert s["violations"] == [
        f"passed_faulty={s['passed_faulty']}",
        f"audit_disagrees={s['audit_disagrees']}",
    ]
    assert "SAFETY VIOLATED: passed_faulty=" in err
    # Not seen by the unit (no feedback): the machine-fault invariant breaks too.
    assert f"audit_disagrees={s['audit_disagrees']}" in s["machine_violations"]


def test_with_gate_feedback_a_welded_relay_raises_the_alarm(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """The same weld on a unit wired with the gate feedback: the runtime sees the gate
    energised after the output went off and raises the alarm (a line stops on it); the
    level-reading gate still passes what came before the stop, so the run stays red. Each
    dropped container behind the weld (a reject the gate passed) goes on record as possibly
    passed (`gate_uncertain`): the audit agrees with the gate."""
    argv = _argv(bundle, small_set, tmp_path / "sim", "relay_welded=1.0,camera_drop=0.5")
    cfg = Path(argv[argv.index("--config") + 1])
    cfg.write_text(cfg.read_text() + f'gate_feedback_pin = "{FB}"\n')
    assert main(argv) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["injected"]["relay_welded"] == 1 and s["alarms"] >= 1
    assert any("gate stuck energised after the pulse" in r for r in s["alarm_reasons"]), s[
        "alarm_reasons"
    ]
    assert s["passed_faulty"] >= 1 and s["audit_disagrees"] == 0, s
    assert s["audit_uncertain"] == s["passed_faulty"], s  # each on record as such
    assert s["machine_violations"] == [], s
    assert any("feedback is on with the output off: c" in r for r in s["alarm_reasons"]), s


def test_the_stuck_alarm_reaches_the_alarm_pin(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """The weld alone, every container accepted: nothing passes that should not (exit 0),
    and the one alarm edge on the alarm pin is the stuck gate's."""
    argv = _argv(bundle, small_set, tmp_path / "sim", "relay_welded=1.0")
    cfg = Path(argv[argv.index("--config") + 1])
    cfg.write_text(cfg.read_text() + f'gate_feedback_pin = "{FB}"\n')
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["faults"] == {} and s["physically_passed"] == N and s["violations"] == []
    assert s["alarms"] == 1 and s["alarm_reasons"][0].startswith("gate stuck energised after")


def test_an_accept_whose_pulse_the_gate_did_not_follow_is_rejected_on_record(
    bundle: Path, tmp_path: Path
) -> None:
    """Feedback wired but dead (it never follows): the accept pulse goes out on the pin, the
    feedback says the gate did not energise, so the container's last row is a reject
    (gpio_error) and the fault counts toward the alarm."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio={"gate_feedback_pin": FB})
    f = MockFactory()
    with line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(cfg.gpio.delay_ms / 1000 + 1)
        released = [s.state for s in gate.states]
    counts = dict(rt.counts)  # closed: every row is written
    assert released == [False, True, False]  # the runtime did pulse
    decision, fault, reason = _rows(tmp_path)["c0"]
    assert (decision, fault) == ("reject", "gpio_error") and "gate feedback stayed off" in reason
    assert (counts["accept"], counts["reject"], counts["fault:gpio_error"]) == (0, 1, 1), counts


def test_safe_outputs_reports_a_gate_that_stays_energised(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The service's ExecStopPost after a runtime died mid-pulse on a welded relay: the
    output is driven off, the feedback stays on, and the verb exits 1 saying so."""
    factory = MockFactory()
    gate = factory.pin("GPIO17")
    gate.function = "output"
    gate.state = True  # what the killed runtime left behind
    factory.pin(FB, pin_class=_WeldedContact).drive_high()
    monkeypatch.setattr("edge.gpio.load_pin_factory", lambda name: factory)
    cfg = tmp_path / "line.toml"
    cfg.write_text(f'[gpio]\npin_factory = "jetson"\ngate_feedback_pin = "{FB}"\n')
    assert main(["safe-outputs", "--config", str(cfg)]) == 1
    assert gate.state is False and factory.pin(FB).state is True
    assert "GPIO23 is still on with the gate output off" in capsys.readouterr().err
    healthy = MockFactory()  # the same with a contact that follows: exit 0
    monkeypatch.setattr("edge.gpio.load_pin_factory", lambda name: healthy)
    assert main(["safe-outputs", "--config", str(cfg)]) == 0
