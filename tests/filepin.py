"""A gpiozero mock pin whose level outlives its process, as a GPIO line's does.

A process killed with an output driven leaves the line as it drove it; MockFactory's pins
die with their process. This pin keeps its level in a file of `$FOD_TEST_PIN_DIR`, one per
pin, a line `<monotonic time> <0|1>` per change, and a new process's pin starts at the
level the last one left. So a test can kill `fod run` and judge, at the pins, what the
next process (`fod safe-outputs`) did to the same lines. `child_env` makes it the mock pin
class of child processes (gpiozero's GPIOZERO_MOCK_PIN_CLASS, an entry point)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Dict, List, Tuple

from gpiozero.pins.mock import MockPin

DIR_ENV = "FOD_TEST_PIN_DIR"
ROOT = Path(__file__).resolve().parents[1]


def levels(folder: Path, name: str) -> List[Tuple[float, bool]]:
    """(monotonic time, level) of every change of pin `name`, oldest first."""
    path = folder / name
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines() if line.strip())
    return [(float(t), v == "1") for t, v in rows]


def level(folder: Path, name: str) -> bool:
    """The pin's level now (never driven: low)."""
    changes = levels(folder, name)
    return changes[-1][1] if changes else False


class FilePin(MockPin):
    def __init__(self, factory, info) -> None:
        super().__init__(factory, info)
        self._state = level(self._folder, info.name)  # as the process before left it
        self.clear_states()

    @property
    def _folder(self) -> Path:
        return Path(os.environ[DIR_ENV])

    def _change_state(self, value: bool) -> bool:
        changed = super()._change_state(value)
        if changed:
            with open(self._folder / self.info.name, "a") as f:
                f.write(f"{time.monotonic():.6f} {int(value)}\n")
        return changed


def child_env(site: Path, pins: Path) -> Dict[str, str]:
    """The environment of a child process whose mock pins are FilePins kept in `pins`."""
    info = site / "fod_test_pins-0.dist-info"  # an installed distribution, as far as
    info.mkdir(parents=True, exist_ok=True)  # importlib.metadata can tell
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fod-test-pins\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[gpiozero_mock_pin_classes]\nfilepin = tests.filepin:FilePin\n"
    )
    pins.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {
        **os.environ,
        "PYTHONPATH": path.rstrip(os.pathsep),
        "GPIOZERO_MOCK_PIN_CLASS": "filepin",
        DIR_ENV: str(pins),
    }
