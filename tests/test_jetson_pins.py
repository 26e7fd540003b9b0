"""The Jetson pin factory's pure parts, with gpiozero's own devices on top: pin names,
board restrictions, the entry point, state bookkeeping, edges stamped on the monotonic
clock and debounced on it. Jetson.GPIO cannot run here: a fake driver records the calls
the factory makes and delivers edges as Jetson.GPIO's callback thread would."""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import pytest
from gpiozero import DigitalInputDevice, GPIOPinInUse, OutputDevice

from edge.gpio import load_pin_factory
from edge.pins.jetson import (
    BOARD_TO_BCM,
    Debounce,
    JetsonFactory,
    JetsonPinError,
    board_pin,
    detect_board,
)

ROOT = Path(__file__).resolve().parents[1]


class FakeDriver:
    """Stands in for Jetson.GPIO: levels per pin, a call log, edge callbacks."""

    def __init__(self) -> None:
        self.levels: Dict[int, bool] = {}
        self.calls: List[Tuple] = []
        self.callbacks: Dict[int, Callable[[int], None]] = {}

    def setup_output(self, pin: int, high: bool) -> None:
        self.calls.append(("setup_output", pin, high))
        self.levels[pin] = high

    def setup_input(self, pin: int) -> None:
        self.calls.append(("setup_input", pin))
        self.levels.setdefault(pin, False)

    def write(self, pin: int, high: bool) -> None:
        self.calls.append(("write", pin, high))
        self.levels[pin] = high

    def read(self, pin: int) -> bool:
        return self.levels.get(pin, False)

    def watch(self, pin: int, callback: Callable[[int], None]) -> None:
        self.calls.append(("watch", pin))
        self.callbacks[pin] = callback

    def unwatch(self, pin: int) -> None:
        self.calls.append(("unwatch", pin))
        self.callbacks.pop(pin, None)

    def release(self, pin: int) -> None:
        self.calls.append(("release", pin))

    def edge(self, pin: int, level: bool) -> None:
        self.levels[pin] = level
        if pin in self.callbacks:
            self.callbacks[pin](pin)


def test_pin_names() -> None:
    assert board_pin("GPIO17") == board_pin("BCM17") == board_pin(17) == board_pin("BOARD11") == 11
    assert board_pin("gpio27") == 13  # gpiozero's numbering, not Jetson.GPIO's CVM name
    assert sorted(BOARD_TO_BCM) == [
        7,
        11,
        12,
        13,
        15,
        16,
        18,
        19,
        21,
        22,
        23,
        24,
        26,
        29,
        31,
        32,
        33,
        35,
        36,
        37,
        38,
        40,
    ]
    for bad in ("BOARD1", "BOARD6", "GPIO2", "J30:7", "PQ.06", ""):
        with pytest.raises(JetsonPinError):
            board_pin(bad)


def test_board_detection() -> None:
    assert detect_board("NVIDIA Jetson AGX Orin Developer Kit") == "agx-orin"
    assert detect_board("NVIDIA Jetson Orin Nano Developer Kit") == "orin"
    assert detect_board("Jetson-AGX") == "unknown"
    assert detect_board("NVIDIA Jetson AGX Xavier Developer Kit") == "agx-xavier"
    assert detect_board("NVIDIA Jetson Xavier NX Developer Kit") == "xavier-nx"


def test_debounce_on_a_fake_clock() -> None:
    d = Debounce(0.010)
    assert [d.accept(t) for t in (1.000, 1.004, 1.009, 1.011, 1.0205, 1.031)] == [
        True,
        False,
        False,
        True,
        False,
        True,
    ]
    assert all(Debounce(None).accept(t) for t in (1.0, 1.0, 1.0))


def test_entry_point_resolves(monkeypatch) -> None:
    """`gpio.pin_factory = "jetson"` reaches our class through the entry point; off a Jetson
    it fails with a named error (no Jetson.GPIO), never a silent mock."""
    from importlib.metadata import entry_points

    eps = {e.name: e for e in entry_points(group="gpiozero_pin_factories")}
    assert eps["jetson"].load() is JetsonFactory
    from edge.gpio import GpioError

    with pytest.raises(GpioError, match="pin factory 'jetson' failed to start"):
        load_pin_factory("jetson")


def test_output_device_drives_the_pin_and_ends_off() -> None:
    drv = FakeDriver()
    f = JetsonFactory(drv, model="NVIDIA Jetson AGX Orin Developer Kit")
    gate = OutputDevice("GPIO17", initial_value=False, pin_factory=f)
    assert drv.calls[0] == ("setup_output", 11, False)
    gate.on()
    assert drv.levels[11] is True and gate.value == 1
    with pytest.raises(GPIOPinInUse):
        OutputDevice("BOARD11", pin_factory=f)  # the same pin by another name
    gate.close()
    assert drv.levels[11] is False and drv.calls[-1] == ("release", 11)
    OutputDevice("BOARD11", pin_factory=f).close()  # released: claimable again


def test_board_restrictions() -> None:
    orin = JetsonFactory(FakeDriver(), model="NVIDIA Jetson AGX Orin Developer Kit")
    with pytest.raises(JetsonPinError, match="output-only"):
        DigitalInputDevice("BOARD11", pin_factory=orin)
    xavier = JetsonFactory(FakeDriver(), model="NVIDIA Jetson AGX Xavier Developer Kit")
    with pytest.raises(JetsonPinError, match="input-only"):
        OutputDevice("BOARD36", pin_factory=xavier)
    gc.collect()  # the half-built device (held by its traceback's cycle) frees the pin
    DigitalInputDevice("BOARD36", pin_factory=xavier).close()


def test_input_edges_are_stamped_debounced_and_filtered(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("edge.pins.jetson.time.monotonic", lambda: clock[0])
    drv = FakeDriver()
    f = JetsonFactory(drv, model="NVIDIA Jetson AGX Orin Developer Kit")
    trig = DigitalInputDevice("GPIO22", pull_up=False, pin_factory=f)  # BOARD15
    assert ("setup_input", 15) in drv.calls
    pin = f.pin("BOARD15")
    seen: List[Tuple[float, bool]] = []
    pin.bounce = 0.010
    pin.edges = "rising"
    pin.when_changed = lambda ticks, state: seen.append((ticks, state))
    assert ("watch", 15) in drv.calls
    for t, level in (
        (100.000, True),
        (100.003, False),
        (100.005, True),
        (100.020, False),
        (100.040, True),
    ):
        clock[0] = t
        drv.edge(15, level)
    # The bounce at +3/+5 ms is dropped; the falling edge at +20 ms is filtered (rising only).
    assert seen == [(100.000, True), (100.040, True)]
    assert trig.value == 1 and f.ticks_diff(100.5, 100.0) == pytest.approx(0.5)
    trig.close()
    assert ("unwatch", 15) in drv.calls


def test_gpiozero_input_device_hears_edges_with_monotonic_times(monkeypatch) -> None:
    """gpiozero's own DigitalInputDevice on our factory: when_activated fires and its
    active_time counts from the edge's monotonic stamp."""
    clock = [5.0]
    monkeypatch.setattr("edge.pins.jetson.time.monotonic", lambda: clock[0])
    drv = FakeDriver()
    f = JetsonFactory(drv, model="NVIDIA Jetson Orin Nano Developer Kit")
    dev = DigitalInputDevice("GPIO23", pull_up=False, pin_factory=f)
    hits: List[int] = []
    dev.when_activated = lambda: hits.append(1)
    drv.edge(16, True)
    clock[0] = 5.25
    assert hits == [1] and dev.active_time == pytest.approx(0.25)
    dev.close()


def test_no_jetson_package_in_the_wheel(tmp_path: Path) -> None:
    """JetPack owns the `jetson` import namespace: our wheel must not ship one. Built from
    a copy of the sources (setuptools writes build/ beside what it builds)."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("fod", "edge", "training", "calibration", "jetson"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    rc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    assert rc.returncode == 0, rc.stderr[-2000:]
    wheel = next(tmp_path.glob("pharma_fod-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edge/pins/jetson.py" in names
    assert not [n for n in names if n.split("/")[0] in ("jetson", "jetson.py")], names
    ep = next(n for n in names if n.endswith("entry_points.txt"))
    assert "jetson = edge.pins.jetson:JetsonFactory" in zipfile.ZipFile(wheel).read(ep).decode()


def test_release_by_number_as_gpiozero_16_does() -> None:
    """gpiozero 1.6 releases a device's pin by `pin.number` (its own GPIO numbering), 2.x by
    `pin.info.name`: both must free that pin and only that one."""
    drv = FakeDriver()
    f = JetsonFactory(drv, model="NVIDIA Jetson AGX Xavier Developer Kit")
    gate = OutputDevice("BOARD11", pin_factory=f)
    other = OutputDevice("BOARD23", pin_factory=f)  # GPIO11: a bare 11 must not mean BOARD11
    pin = f.pin("BOARD11")
    assert (pin.number, pin.board, pin.info.name) == (17, 11, "BOARD11")
    f.release_pins(gate, pin.number)
    with pytest.raises(GPIOPinInUse):
        OutputDevice("BOARD23", pin_factory=f)  # still held by `other`
    OutputDevice("BOARD11", pin_factory=f).close()  # freed by number
    other.close()
