"""`fod safe-outputs`, the service's ExecStopPost: the gate and alarm outputs off after the
runtime ended however it ended, those it drove included where the line config has changed
since (`--outputs-record`). Judged at the pins."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from fod.cli import main


@pytest.mark.parametrize("alarm_output", ["alarm", "ready", "heartbeat"])
def test_safe_outputs_drives_energised_pins_off(
    tmp_path: Path, monkeypatch, capsys, alarm_output: str
) -> None:
    """The service's ExecStopPost (`fod safe-outputs`) after a runtime died with its gate and
    alarm outputs high: both pins end low, judged by the pins, not by the verb's message.
    With the ready or heartbeat alarm output, low is the alarm: a dead unit shows it."""
    factory = MockFactory()
    _energised(factory, "GPIO17", "GPIO27")
    monkeypatch.setattr("edge.gpio.load_pin_factory", lambda name: factory)
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        '[gpio]\npin_factory = "jetson"\nejector_pin = "GPIO17"\nalarm_pin = "GPIO27"\n'
        f'alarm_energise_to = "{alarm_output}"\n'
    )
    assert main(["safe-outputs", "--config", str(cfg)]) == 0
    assert factory.pin("GPIO17").state is False and factory.pin("GPIO27").state is False
    assert [s.state for s in factory.pin("GPIO17").states][-1] is False
    out = capsys.readouterr().out
    assert "outputs off: GPIO17, GPIO27" in out
    assert ("off shows the alarm" in out) == (alarm_output != "alarm")


def _energised(factory: MockFactory, *names: str) -> None:
    for name in names:  # what a killed runtime may leave behind
        pin = factory.pin(name)
        pin.function = "output"
        pin.state = True


@pytest.mark.parametrize("edit", ["pins moved", "config broken"])
def test_safe_outputs_drives_off_what_the_runtime_drove_after_the_config_changed(
    tmp_path: Path, monkeypatch, capsys, edit: str
) -> None:
    """The line config edited while the runtime ran (its pins moved, or it no longer
    loads), then the runtime died with its gate and alarm energised. ExecStopPost reads the
    config as it is by then: only with the record `fod run --outputs-record` wrote do the
    outputs the runtime drove end low, judged at the pins."""
    from edge.config import load_config
    from edge.outputs_record import write_record

    factory = MockFactory()
    monkeypatch.setattr("edge.gpio.load_pin_factory", lambda name: factory)
    cfg = tmp_path / "line.toml"
    cfg.write_text('[gpio]\npin_factory = "jetson"\nejector_pin = "GPIO17"\nalarm_pin = "GPIO27"\n')
    record = tmp_path / "state" / "driven-outputs.json"
    write_record(record, load_config(cfg).gpio, cfg)  # as `fod run` does, before driving them
    _energised(factory, "GPIO17", "GPIO27")
    if edit == "pins moved":
        cfg.write_text(
            '[gpio]\npin_factory = "jetson"\nejector_pin = "GPIO5"\nalarm_pin = "GPIO6"\n'
        )
    else:
        cfg.write_text('[gpio\npin_factory = "jetson"\n')
    argv = ["safe-outputs", "--config", str(cfg)]
    assert main(argv) == (0 if edit == "pins moved" else 2)  # without the record
    assert factory.pin("GPIO17").state is True and factory.pin("GPIO27").state is True
    capsys.readouterr()
    rc = main([*argv, "--outputs-record", str(record)])
    assert factory.pin("GPIO17").state is False and factory.pin("GPIO27").state is False
    out, err = capsys.readouterr()
    assert f"outputs off as the runtime drove them ({record}): GPIO17, GPIO27" in out
    if edit == "pins moved":
        assert rc == 0 and "outputs off: GPIO5, GPIO6" in out
        assert factory.pin("GPIO5").state is False and factory.pin("GPIO6").state is False
    else:
        assert rc == 2 and f"{cfg}: not valid TOML" in err


def test_outputs_record_unreadable_or_unwritable(tmp_path: Path, monkeypatch, capsys) -> None:
    """A record that is not one: the config's outputs still go off, the exit names the
    file. `fod run` that cannot write its record starts nothing."""
    factory = MockFactory()
    monkeypatch.setattr("edge.gpio.load_pin_factory", lambda name: factory)
    cfg = tmp_path / "line.toml"
    cfg.write_text('[gpio]\npin_factory = "jetson"\nejector_pin = "GPIO17"\nalarm_pin = "GPIO27"\n')
    record = tmp_path / "driven-outputs.json"
    record.write_text('{"pin_factory": "jetson"')
    _energised(factory, "GPIO17", "GPIO27")
    assert main(["safe-outputs", "--config", str(cfg), "--outputs-record", str(record)]) == 2
    assert factory.pin("GPIO17").state is False and factory.pin("GPIO27").state is False
    assert f"{record}: unreadable outputs record" in capsys.readouterr().err
    from edge.config import load_config
    from edge.errors import FodError
    from edge.outputs_record import write_record

    (tmp_path / "file").write_text("")
    with pytest.raises(FodError, match="cannot write the outputs record"):
        write_record(tmp_path / "file" / "rec.json", load_config(cfg).gpio, cfg)
