"""The outputs a runtime drives, on record before it drives them.

`fod safe-outputs` (the service's ExecStopPost) drives the gate and alarm outputs off after
the runtime ended, however it ended. It reads the line config as it is on disk then, which
need not be the config the runtime started with: edited while the line ran, its pins may
have moved, or it may no longer load. Either way the pins the dead runtime left energised
would stay so (with the accept wiring, a gate left on passes every container). `fod run
--outputs-record PATH` writes the outputs it is about to drive here first; `fod
safe-outputs --outputs-record PATH` drives those off as well as the config's, and with a
config that does not load, those alone.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from .errors import FodError
from .fsutil import atomic_write_json
from .gpio import GpioConfig


@dataclass(frozen=True)
class DrivenOutputs:
    pin_factory: str  # how the runtime reached the pins
    ejector_pin: str  # the gate output
    alarm_pin: Optional[str]  # the alarm output, if any
    config: str  # the line config they came from
    pid: int  # the runtime that drove them

    @property
    def pins(self) -> str:
        return ", ".join(p for p in (self.ejector_pin, self.alarm_pin) if p)

    def gpio(self) -> GpioConfig:
        """A GPIO config that opens these outputs (low) and closes them off."""
        return GpioConfig(
            pin_factory=self.pin_factory, ejector_pin=self.ejector_pin, alarm_pin=self.alarm_pin
        )

    def same_outputs(self, cfg: GpioConfig) -> bool:
        return (self.pin_factory, self.ejector_pin, self.alarm_pin) == (
            cfg.pin_factory,
            cfg.ejector_pin,
            cfg.alarm_pin,
        )


def write_record(path: Path, cfg: GpioConfig, config: Path) -> DrivenOutputs:
    """Put the outputs of `cfg` on record at `path` (atomically), before any is driven."""
    rec = DrivenOutputs(cfg.pin_factory, cfg.ejector_pin, cfg.alarm_pin, str(config), os.getpid())
    try:
        atomic_write_json(path, asdict(rec))
    except OSError as e:
        raise FodError(f"{path}: cannot write the outputs record: {e}") from None
    return rec


def read_record(path: Path) -> Optional[DrivenOutputs]:
    """The outputs on record at `path`; None where there is none yet (a unit's first start).
    Raises FodError naming the file where it is unreadable or not such a record."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise FodError(f"{path}: unreadable outputs record: {e}") from None
    ok = isinstance(data, dict) and set(data) == {
        "pin_factory",
        "ejector_pin",
        "alarm_pin",
        "config",
        "pid",
    }
    ok = ok and all(isinstance(data[k], str) and data[k] for k in ("pin_factory", "ejector_pin"))
    ok = ok and (data["alarm_pin"] is None or isinstance(data["alarm_pin"], str))
    if not ok:
        raise FodError(f"{path}: not an outputs record of `fod run`")
    return DrivenOutputs(**data)
