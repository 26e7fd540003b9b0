"""GPIO over gpiozero: the ejector, the alarm, the trigger input, and a pulse scheduler.

Devices never touch hardware themselves: an injected pin factory does (`mock` for
simulation and tests, gpiozero's Raspberry Pi factories, `jetson` once registered).
Pulses run on their own thread that waits on an Event with a timeout against the
monotonic clock, so a pulse lands at trigger time + delay whatever the inference
thread is doing, and `close()` cancels what is pending.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from .errors import FodError


class GpioError(FodError):
    """A pin factory or device could not be set up or driven."""


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


@dataclass(frozen=True)
class GpioConfig:
    pin_factory: str = "mock"  # mock | lgpio | rpigpio | pigpio | native | jetson
    ejector_pin: str = "GPIO17"
    energise_to: str = (
        "reject"  # "reject": a pulse rejects; "accept": a pulse lets it pass (dead unit rejects)
    )
    pulse_ms: float = 40.0  # ejector pulse length
    delay_ms: float = 600.0  # trigger edge -> container at the reject gate
    alarm_pin: Optional[str] = "GPIO27"  # raised after `alarm_faults` faults in `alarm_window_s`
    alarm_faults: int = 3
    alarm_window_s: float = 60.0
    trigger_pin: Optional[str] = None  # None: triggers come from a timer (simulation)
    trigger_bounce_ms: float = 2.0


class PulseScheduler:
    """Fires `device.on()` at each scheduled monotonic time for `pulse_s`, on one thread."""

    def __init__(
        self, device: Any, pulse_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.device, self.pulse_s, self.clock = device, pulse_s, clock
        self._heap: List[Tuple[float, int]] = []
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.fired: List[Tuple[float, float]] = []  # (scheduled, actual) monotonic times
        self.missed: List[
            float
        ] = []  # scheduled times already past by more than a pulse: not fired
        self.errors = 0
        self._active = 0  # 1 while a pulse is on
        self._thread = threading.Thread(target=self._run, name="ejector", daemon=True)
        self._thread.start()

    def schedule(self, at: float) -> None:
        with self._lock:
            heapq.heappush(self._heap, (at, next(self._count)))
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._heap) + self._active

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every scheduled pulse has fired and ended."""
        end = self.clock() + timeout
        while self.pending() and self.clock() < end:
            self._stop.wait(0.005)
        return not self.pending()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                nxt = self._heap[0][0] if self._heap else None
            if nxt is None:
                self._wake.wait()
                self._wake.clear()
                continue
            wait = nxt - self.clock()
            if wait > 0:
                self._wake.wait(wait)  # a new, earlier deadline or close() wakes us
                self._wake.clear()
                continue
            with self._lock:
                at, _ = heapq.heappop(self._heap)
                if self.clock() - at > self.pulse_s:
                    # The container is past the gate: a pulse now would hit the next one.
                    self.missed.append(at)
                    continue
                self._active = 1
            try:
                self.device.on()
                self.fired.append((at, self.clock()))
                self._stop.wait(self.pulse_s)
                self.device.off()
            except Exception:  # a GPIO fault must not kill the thread: counted, alarm upstream
                self.errors += 1
            finally:
                with self._lock:
                    self._active = 0

    def close(self) -> None:
        """Cancel pending pulses, end the thread, leave the output off. Idempotent."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        with self._lock:
            self._heap.clear()
        with contextlib.suppress(Exception):  # the device may already be closed
            self.device.off()


class LineIO:
    """The unit's outputs and inputs; a context manager that releases every pin on exit."""

    def __init__(self, cfg: GpioConfig, factory: Any = None) -> None:
        from gpiozero import DigitalInputDevice, OutputDevice

        if cfg.energise_to not in ("reject", "accept"):
            raise GpioError(
                f"gpio.energise_to must be 'reject' or 'accept', got {cfg.energise_to!r}"
            )
        self.cfg = cfg
        self.factory = factory if factory is not None else load_pin_factory(cfg.pin_factory)
        self._devices: List[Any] = []
        try:
            self.ejector = self._add(
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
        except Exception as e:
            self.close()
            raise GpioError(f"GPIO setup failed: {e}") from None
        self.pulses = PulseScheduler(self.ejector, cfg.pulse_ms / 1000)

    def _add(self, dev: Any) -> Any:
        self._devices.append(dev)
        return dev

    def act(self, trigger_t: float, reject: bool) -> bool:
        """Schedule what the wiring needs for this container; True if a pulse was scheduled."""
        pulse = reject if self.cfg.energise_to == "reject" else not reject
        if pulse:
            self.pulses.schedule(trigger_t + self.cfg.delay_ms / 1000)
        return pulse

    def set_alarm(self, on: bool) -> None:
        if self.alarm is not None:
            self.alarm.value = on

    def close(self) -> None:
        if getattr(self, "pulses", None) is not None:
            self.pulses.close()
        for d in reversed(self._devices):
            with contextlib.suppress(Exception):  # closing twice, or a pin already gone
                d.close()
        self._devices = []

    def __enter__(self) -> LineIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
