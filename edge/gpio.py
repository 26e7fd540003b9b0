"""GPIO over gpiozero: the gate output, the alarm, the trigger input and the gate feedback;
the gate pulses themselves run in `edge/pulses.py`.

Devices never touch hardware themselves: an injected pin factory does (`mock` for
simulation and tests, gpiozero's Raspberry Pi factories, `jetson` for Jetson units).

Positive release (`energise_to = "accept"`, the default): the gate output is pulsed
once per container, at its gate time, only for a container whose accept was recorded
in time; the machine's gate rejects whatever gets no pulse, so a hung, crashed or
killed runtime rejects. With `energise_to = "reject"` a reject pulse is armed at the
trigger and cancelled only by a recorded, in-time accept; a dead process fires nothing
then, and containers pass: that wiring needs the machine's own interlock on the alarm
or watchdog.

The alarm output is energised on an alarm (`alarm_energise_to = "alarm"`, the default) or,
fail-safe, energised while the unit runs with no alarm (`"ready"`), or toggled then
(`"heartbeat"`, for a controller that times it): then a unit that is not running -
starting, stopped, killed, unpowered, its cable cut - shows the alarm too, since every
output is off (low) whenever no runtime drives it (`edge/alarm.py` writes the levels).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

from .alarm import ALARM_OUTPUTS
from .errors import GpioError
from .pulse_queue import Pulse
from .pulses import PulseScheduler

log = logging.getLogger(__name__)


def load_pin_factory(name: str) -> Any:
    """A gpiozero pin factory by its entry-point name (group `gpiozero_pin_factories`)."""
    if sys.version_info >= (3, 10):
        from importlib.metadata import entry_points

        eps = list(entry_points(group="gpiozero_pin_factories"))
    else:  # pragma: no cover - Python 3.8/3.9 on JetPack 5
        from importlib.metadata import entry_points

        eps = list(entry_points().get("gpiozero_pin_factories", []))
    for ep in eps:
        if ep.name == name.lower():
            try:
                return ep.load()()
            except Exception as e:  # a factory fails in its own ways off its hardware
                raise GpioError(f"pin factory {name!r} failed to start: {e}") from None
    raise GpioError(f"no gpiozero pin factory {name!r}; installed: {sorted(ep.name for ep in eps)}")


# The machine may read the gate output from this long before a container's gate time (to
# a pulse length after it): a container whose window the output was on in passed
# (accept wiring) or was ejected. The simulator's gate model reads it the same way.
GATE_LEAD_S = 0.005


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = ""  # lgpio | rpigpio | pigpio | native | jetson; mock only when simulating
    ejector_pin: str = "GPIO17"  # the gate output: accept pulses (or reject pulses, see below)
    energise_to: str = "accept"  # "accept": positive release, a dead unit rejects everything
    pulse_ms: float = 40.0  # gate output pulse length
    delay_ms: float = 600.0  # trigger edge -> container at the gate
    alarm_pin: Optional[str] = "GPIO27"  # raised after `alarm_faults` faults in `alarm_window_s`
    alarm_energise_to: str = "alarm"  # "ready" / "heartbeat": on / toggling while all is well
    alarm_faults: int = 3
    alarm_window_s: float = 60.0
    trigger_pin: Optional[str] = None  # None: triggers come from a timer (simulation)
    trigger_bounce_ms: float = (
        10.0  # edges closer than this to the last one are bounce (600/min: 100 ms apart)
    )
    gate_feedback_pin: Optional[str] = None  # an input that follows the gate (see above)
    gate_feedback_ms: float = 10.0  # how long the feedback may take to follow the output


class Debouncer:
    """Software debounce in monotonic time: an edge within `bounce_s` of the last kept one
    is bounce (counted, not a container)."""

    def __init__(self, bounce_s: float) -> None:
        self.bounce_s = bounce_s
        self.last: Optional[float] = None
        self.bounces = 0

    def accept(self, t: float) -> bool:
        if self.last is not None and t - self.last < self.bounce_s:
            self.bounces += 1
            return False
        self.last = t
        return True


class LineIO:
    """The unit's outputs and inputs; a context manager that releases every pin on exit."""

    def __init__(
        self,
        cfg: GpioConfig,
        factory: Any = None,
        on_pulse_done: Optional[Callable[[Pulse], None]] = None,
    ) -> None:
        from gpiozero import DigitalInputDevice, OutputDevice

        if cfg.energise_to not in ("reject", "accept"):
            raise GpioError(
                f"gpio.energise_to must be 'reject' or 'accept', got {cfg.energise_to!r}"
            )
        if cfg.alarm_energise_to not in ALARM_OUTPUTS:
            raise GpioError(
                f"gpio.alarm_energise_to must be one of {tuple(ALARM_OUTPUTS)}, "
                f"got {cfg.alarm_energise_to!r}"
            )
        self.cfg = cfg
        if factory is None:
            if not cfg.pin_factory:
                raise GpioError("gpio.pin_factory is not set: name the unit's pin factory")
            factory = load_pin_factory(cfg.pin_factory)
        self.factory = factory
        self._devices: List[Any] = []
        self.debounce = Debouncer(cfg.trigger_bounce_ms / 1000)
        try:
            self.gate = self._add(
                OutputDevice(cfg.ejector_pin, initial_value=False, pin_factory=self.factory)
            )
            self.alarm = (
                self._add(
                    OutputDevice(cfg.alarm_pin, initial_value=False, pin_factory=self.factory)
                )
                if cfg.alarm_pin
                else None
            )
            self.trigger = (
                self._add(
                    DigitalInputDevice(cfg.trigger_pin, bounce_time=None, pin_factory=self.factory)
                )
                if cfg.trigger_pin
                else None
            )
            self.gate_feedback = (
                self._add(
                    DigitalInputDevice(
                        cfg.gate_feedback_pin, bounce_time=None, pin_factory=self.factory
                    )
                )
                if cfg.gate_feedback_pin
                else None
            )
        except Exception as e:
            self.close()
            raise GpioError(f"GPIO setup failed: {e}") from None
        self.pulses = PulseScheduler(
            self.gate,
            cfg.pulse_ms / 1000,
            on_pulse_done,
            feedback=self.gate_feedback,
            feedback_s=cfg.gate_feedback_ms / 1000,
        )

    def _add(self, dev: Any) -> Any:
        self._devices.append(dev)
        return dev

    def gate_time(self, trigger_t: float) -> float:
        return trigger_t + self.cfg.delay_ms / 1000

    def arm(self, tag: str, trigger_t: float) -> Optional[Pulse]:
        """At the trigger: with reject wiring, schedule the reject pulse an accept must cancel."""
        if self.cfg.energise_to == "reject":
            return self.pulses.schedule(self.gate_time(trigger_t), tag)
        return None

    def release(self, tag: str, trigger_t: float, armed: Optional[Pulse]) -> bool:
        """A recorded accept lets the container pass: schedule its accept pulse, or cancel its
        armed reject pulse. False when that is no longer possible (too late): it is rejected."""
        gate = self.gate_time(trigger_t)
        if self.cfg.energise_to == "reject":
            return armed is not None and self.pulses.cancel(armed)
        if self.pulses.clock() > gate:
            return False
        self.pulses.schedule(gate, tag)
        return True

    def hold_back(self, tag: str, trigger_t: float, armed: Optional[Pulse]) -> bool:
        """After a `release` that raised, whatever it did before raising: the gate rejects
        the container -> False, or True where it may pass. Accept wiring: an accept pulse
        it scheduled is withdrawn; none is taken before its gate time, so before then none
        has fired. Reject wiring: a reject pulse it cancelled is armed again, at the same
        time (the pulse thread fires it while no more than a pulse length late; a missed
        one is reported as passed, as any). May raise: then it may pass."""
        gate = self.gate_time(trigger_t)
        if self.cfg.energise_to == "accept":
            self.pulses.cancel_near(gate, self.cfg.pulse_ms / 1000, tag)
            return self.pulses.clock() >= gate
        if armed is None:  # no reject pulse was ever armed: nothing stops it
            return True
        if armed.state == "cancelled":
            self.pulses.schedule(gate, tag)
        return False

    def withdraw_accepts(self, trigger_t: float, window_s: float) -> List[Pulse]:
        """Accept wiring: cancel the accept pulses still pending for containers triggered
        within `window_s` of `trigger_t` (their gate windows overlap its own); returns them.
        Reject wiring has none to withdraw: each container's armed reject pulse stands."""
        if self.cfg.energise_to != "accept":
            return []
        return self.pulses.cancel_near(self.gate_time(trigger_t), window_s)

    def on_trigger(self, callback: Callable[[float], None]) -> None:
        """Call `callback(edge_t)` once per debounced rising edge of the trigger input;
        `edge_t` is the edge's monotonic time from the pin factory's ticks, not the (later,
        jittery) time the callback runs."""
        if self.trigger is None:
            raise GpioError("gpio.trigger_pin is not set")
        dev = self.trigger

        def handler() -> None:
            now = time.monotonic()
            held = dev.active_time  # seconds since the edge, by the factory's own ticks
            t = now - held if held is not None and 0 <= held < 1.0 else now
            if self.debounce.accept(t):
                callback(t)

        dev.when_activated = handler

    def gate_stuck(self) -> bool:
        """With the gate output off (as LineIO claims it): is the gate feedback still on after
        `gate_feedback_ms`? False without a feedback input."""
        if self.gate_feedback is None:
            return False
        time.sleep(self.cfg.gate_feedback_ms / 1000)
        return bool(self.gate_feedback.is_active)

    def write_alarm(self, level: bool) -> None:
        """The alarm output's pin level (what it means: `edge.alarm.output_level`)."""
        if self.alarm is not None:
            self.alarm.value = level

    @property
    def alarm_when_off(self) -> bool:
        """Whether the alarm output shows the alarm while off, as opened and as left at
        close: the ready and heartbeat outputs do (a unit not running is not inspecting)."""
        return self.cfg.alarm_energise_to != "alarm"

    def close(self) -> None:
        """Cancel pending pulses and drive every output to its safe state (off). Idempotent."""
        if getattr(self, "pulses", None) is not None:
            self.pulses.close()
        for d in reversed(self._devices):
            with contextlib.suppress(Exception):  # closing twice, or a pin already gone
                if hasattr(d, "off"):
                    d.off()
                d.close()
        self._devices = []

    def __enter__(self) -> LineIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
