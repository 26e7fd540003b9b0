"""`fod service` (the container image's PID 1): the outputs a `fod run` left energised
are driven off however it ended (killed, hung, stopped) and before the next run starts.
Real processes, the demo bundle, pins that outlive their process (`tests/filepin.py`),
judged at the pins."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from edge.service import exit_code
from fod.cli import main
from fod.line import DEMO_BUNDLE
from training.data.synth import SynthConfig
from training.data.synth_writer import write_synthetic_set

from .filepin import child_env, level, levels

pytestmark = pytest.mark.skipif(not DEMO_BUNDLE.exists(), reason="no models/demo in this tree")

GATE, ALARM = "GPIO17", "GPIO27"
WAIT_S = 90.0  # a bound on a hang, not a timing claim: the demo loads in seconds


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One clean container's 36 frames in the demo's look: 12 containers the model accepts
    (accept pulses) at 3 frames each."""
    out = tmp_path_factory.mktemp("clean") / "set"
    cfg = SynthConfig(width=640, height=384, frames=36, reject_fraction=0.0)
    write_synthetic_set(out, images=0, sequences=1, cfg=cfg, seed=3, progress=False)
    (path,) = (out / "sequences").glob("*.avi")
    return path


def _line(tmp: Path, video: Path) -> Path:
    """Accept wiring with long pulses (the gate is on half of each container's second) and
    the ready alarm output (on while the runtime runs with no alarm)."""
    cfg = tmp / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{video}"\nframes = 3\nmono = true\n'
        f'[model]\nbundle = "{DEMO_BUNDLE}"\nallow_unsigned = true\n'
        '[gpio]\npin_factory = "mock"\ndelay_ms = 1500.0\npulse_ms = 500.0\n'
        'alarm_energise_to = "ready"\n'
        f'[audit]\nfolder = "{tmp / "audit"}"\nmin_free_bytes = 0\n[metrics]\nport = 0\n'
    )
    return cfg


class Unit:
    """`fod` processes on one set of pins."""

    def __init__(self, tmp: Path, video: Path) -> None:
        self.pins = tmp / "pins"
        self.env = child_env(tmp / "site", self.pins)
        self.config, self.record = _line(tmp, video), tmp / "driven-outputs.json"

    def start(self, verb: str, *more: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "fod", verb, "--config", str(self.config)]
        cmd += ["--outputs-record", str(self.record), "--allow-mock-pins", "--rate", "40", *more]
        return subprocess.Popen(cmd, env=self.env, stderr=subprocess.PIPE, text=True)

    def on(self, name: str) -> bool:
        return level(self.pins, name)


def _until(what: Callable[[], Any], proc: subprocess.Popen) -> Any:
    """What `what` gives once it is true, while `proc` runs."""
    end = time.monotonic() + WAIT_S
    while not (got := what()):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)
    return got


def _events(folder: Path) -> str:
    path = folder / "audit" / "events.jsonl"
    return path.read_text() if path.exists() else ""


def _run_child(service: subprocess.Popen) -> Optional[int]:
    """The service's `fod run` child, once it is one (not its first `fod safe-outputs`)."""
    try:
        kids = Path(f"/proc/{service.pid}/task/{service.pid}/children").read_text().split()
        for pid in kids:
            if b"run" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"):
                return int(pid)
    except OSError:  # a child ending as it is read
        pass
    return None


def _started(service: subprocess.Popen) -> int:
    return _until(lambda: _run_child(service), service)


def test_outputs_off_before_the_run_and_after_it_was_killed(tmp_path: Path, video: Path) -> None:
    """A `fod run` killed mid-pulse (as the image ran it before: OOM killer, a crash in
    native code) leaves the gate energised (accept wiring: every container passes) and the
    ready output on (the PLC sees a unit at work). Under `fod service` both are off before
    the next run starts, and again after that run is killed the same way."""
    unit = Unit(tmp_path, video)
    bare = unit.start("run")
    _until(lambda: unit.on(GATE), bare)  # an accept pulse
    bare.kill()
    bare.communicate()
    time.sleep(0.3)
    assert unit.on(GATE) and unit.on(ALARM)  # left as the dead process drove them

    service = unit.start("service")
    child = _started(service)
    assert not unit.on(GATE) and not unit.on(ALARM)  # off before `fod run` even started
    # the new run puts the dead one on record: what it held has no row
    _until(lambda: f"pid {bare.pid} since" in _events(unit.config.parent), service)
    _until(lambda: unit.on(GATE), service)
    killed = time.monotonic()
    os.kill(child, signal.SIGKILL)
    _, err = service.communicate(timeout=WAIT_S)
    assert service.returncode == 128 + signal.SIGKILL, err
    for name in (GATE, ALARM):
        t, on = levels(unit.pins, name)[-1]
        assert not on and t > killed, (name, levels(unit.pins, name))


def test_a_hung_run_is_killed_by_the_watchdog(tmp_path: Path, video: Path) -> None:
    """The whole `fod run` process frozen mid-pulse (SIGSTOP: no thread runs, as under a
    native call that holds the interpreter): its pulse thread cannot end the pulse and the
    gate stays energised. The service's watchdog, missing the run's WATCHDOG=1 beats, kills
    it, and the gate and the ready output go off."""
    unit = Unit(tmp_path, video)
    service = unit.start("service", "--watchdog", "2")
    child = _started(service)
    _until(lambda: unit.on(GATE), service)
    os.kill(child, signal.SIGSTOP)
    frozen = time.monotonic()
    _, err = service.communicate(timeout=WAIT_S)
    assert service.returncode == 128 + signal.SIGKILL, err
    assert "no WATCHDOG=1 for 2.0 s: killing it" in err
    for name in (GATE, ALARM):
        t, on = levels(unit.pins, name)[-1]
        assert not on and t > frozen, (name, levels(unit.pins, name))


def test_the_stop_signal_ends_the_run_as_systemd_stops_it(tmp_path: Path, video: Path) -> None:
    """`docker stop` signals the service: the run closes as under `systemctl stop` (its
    exit line, its own exit status) and the outputs are off."""
    unit = Unit(tmp_path, video)
    service = unit.start("service")
    _started(service)
    _until(lambda: unit.on(ALARM), service)  # the ready output: the runtime runs
    service.send_signal(signal.SIGTERM)
    _, err = service.communicate(timeout=WAIT_S)
    assert service.returncode in (0, 3), err  # fod run's own: 3 after an alarm
    assert f"fod run ended: exit {service.returncode}" in err
    assert not unit.on(GATE) and not unit.on(ALARM)


def test_a_run_that_never_gets_ready_is_killed(tmp_path: Path, video: Path) -> None:
    """A run hung while it loads (a TensorRT engine that never comes back) sends no
    READY=1: it is killed at the start timeout."""
    unit = Unit(tmp_path, video)
    service = unit.start("service", "--start-timeout", "1")
    with contextlib.suppress(ProcessLookupError):  # killed already
        os.kill(_started(service), signal.SIGSTOP)
    _, err = service.communicate(timeout=WAIT_S)
    assert service.returncode == 128 + signal.SIGKILL
    assert "no READY=1 within the start timeout: killing it" in err


def test_exit_code_is_the_shells() -> None:
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(-signal.SIGKILL) == 137 and exit_code(-signal.SIGTERM) == 143


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1", "soon"])
def test_timeouts_are_finite_and_positive(value: str, capsys) -> None:
    """A NaN or infinite watchdog would never fire."""
    with pytest.raises(SystemExit) as e:
        main(["service", "--watchdog", value])
    assert e.value.code == 2 and "--watchdog" in capsys.readouterr().err
