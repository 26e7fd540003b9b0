"""GPIO over gpiozero: the gate output, the alarm, the trigger input, and a pulse scheduler.

Devices never touch hardware themselves: an injected pin factory does (`mock` for
simulation and tests, gpiozero's Raspberry Pi factories, `jetson` for Jetson units).

Positive release (`energise_to = "accept"`, the default): the gate output is pulsed
once per container, at its gate time, only for a container whose accept was recorded
in time; the machine's gate rejects whatever gets no pulse, so a hung, crashed or
killed runtime rejects. With `energise_to = "reject"` a reject pulse is armed at the
trigger and cancelled only by a recorded, in-time accept; a dead process fires nothing
then, and containers pass: that wiring needs the machine's own interlock on the alarm
or watchdog.

Pulses run on one supervised thread that waits on an Event with a timeout against the
monotonic clock, so a pulse lands at trigger time + delay whatever the other threads do.
Every pulse ends in a state (fired, missed, error, cancelled) reported to `on_done`.

With `gate_feedback_pin` (an input that follows the gate: the relay's auxiliary contact,
or the controller's "gate energised" signal), each pulse is checked against what the gate
did: feedback off at the end of the pulse makes the pulse an error (for an accept: the
container was not released), and feedback still on `gate_feedback_ms` after the output
went off, or on while no pulse is, is a stuck gate (a welded relay, a short): the runtime
raises the alarm, since with a level-reading controller every container would pass.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, List, Optional, Tuple

from .errors import FodError
from .supervise import Stage, StopStage

log = logging.getLogger(__name__)


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
    pin_factory: str = ""  # lgpio | rpigpio | pigpio | native | jetson; mock only when simulating
    ejector_pin: str = "GPIO17"  # the gate output: accept pulses (or reject pulses, see below)
    energise_to: str = "accept"  # "accept": positive release, a dead unit rejects everything
    pulse_ms: float = 40.0  # gate output pulse length
    delay_ms: float = 600.0  # trigger edge -> container at the gate
    alarm_pin: Optional[str] = "GPIO27"  # raised after `alarm_faults` faults in `alarm_window_s`
    alarm_faults: int = 3
    alarm_window_s: float = 60.0
    trigger_pin: Optional[str] = None  # None: triggers come from a timer (simulation)
    trigger_bounce_ms: float = (
        10.0  # edges closer than this to the last one are bounce (600/min: 100 ms apart)
    )
    gate_feedback_pin: Optional[str] = None  # an input that follows the gate (see above)
    gate_feedback_ms: float = 10.0  # how long the feedback may take to follow the output


@dataclass(eq=False)
class Pulse:
    at: float  # scheduled monotonic time (the container's gate time)
    tag: str  # the container it is for
    state: str = "pending"  # pending | on | fired | missed | error | cancelled
    fired_t: Optional[float] = None
    error: Optional[str] = None
    seq: int = field(default=0, repr=False)


class PulseScheduler:
    """Fires `device.on()` at each scheduled monotonic time for `pulse_s`, on one thread."""

    def __init__(
        self,
        device: Any,
        pulse_s: float,
        on_done: Optional[Callable[[Pulse], None]] = None,
        clock: Callable[[], float] = time.monotonic,
        history: int = 4096,
        feedback: Any = None,
        feedback_s: float = 0.01,
    ) -> None:
        self.device, self.pulse_s, self.clock = device, pulse_s, clock
        self.on_done = on_done
        self.on_crash: Optional[Callable[[BaseException], None]] = None  # the runtime alarms
        self.feedback, self.feedback_s = feedback, feedback_s  # an input following the gate
        self.on_stuck: Optional[Callable[[str], None]] = None  # the runtime alarms
        self.stuck = False  # the feedback says the gate is energised while the output is off
        self._heap: List[Tuple[float, int, Pulse]] = []
        self._count = itertools.count()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Bounded: a line runs for months; the simulator reads the recent ones.
        self.done: Deque[Pulse] = collections.deque(maxlen=history)
        self.counts = {"fired": 0, "missed": 0, "error": 0, "cancelled": 0, "stuck": 0}
        self._active = 0  # 1 while a pulse is on
        self._on: Optional[Pulse] = None  # the pulse now on (pulse thread only)
        self.stage = Stage("pulses", self._step, self._crashed, clock)
        self.stage.start()

    def schedule(self, at: float, tag: str = "") -> Pulse:
        if not math.isfinite(at):  # NaN would poison the heap: no later pulse would fire
            raise ValueError(f"pulse {tag!r}: time {at!r} is not finite")
        p = Pulse(at, tag, seq=next(self._count))
        with self._lock:
            heapq.heappush(self._heap, (at, p.seq, p))
        self._wake.set()
        return p

    def cancel(self, pulse: Pulse) -> bool:
        """Cancel a pending pulse; False if it is already on, fired or done otherwise."""
        with self._lock:
            if pulse.state != "pending":
                return False
            pulse.state = "cancelled"
            self.counts["cancelled"] += 1
        return True

    def pending(self) -> int:
        with self._lock:
            return sum(p.state == "pending" for _, _, p in self._heap) + self._active

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every scheduled pulse has fired and ended."""
        end = self.clock() + timeout
        while self.pending() and self.clock() < end:
            self._stop.wait(0.005)
        return not self.pending()

    def _finish(self, p: Pulse, state: str) -> None:
        p.state = state
        self.counts[state] += 1
        self.done.append(p)
        if self.on_done is not None:
            self.on_done(p)

    def _step(self) -> None:
        if self._stop.is_set():
            raise StopStage
        with self._lock:
            while self._heap and self._heap[0][2].state == "cancelled":
                heapq.heappop(self._heap)
            nxt = self._heap[0][0] if self._heap else None
        wait = 0.25 if nxt is None else min(0.25, nxt - self.clock())
        if wait > 0:  # short waits: the stage beats its heartbeat while idle
            self._check_off("while no pulse was on")
            self._wake.wait(wait)  # a new, earlier deadline or close() wakes us
            self._wake.clear()
            return
        with self._lock:
            at, _, p = heapq.heappop(self._heap)
            if p.state != "pending":
                return
            late = self.clock() - at > self.pulse_s
            if not late:
                p.state, self._active = "on", 1
        if late:  # the container is past the gate: a pulse now would hit the next one
            self._finish(p, "missed")
            return
        try:  # the pulse counts as pending until the gate is seen to follow it off
            self._fire(p)
            if self.feedback is not None:
                self._stop.wait(self.feedback_s)
                self._check_off(f"after the pulse for {p.tag}")
        finally:
            with self._lock:
                self._active = 0

    def _fire(self, p: Pulse) -> None:
        try:
            self._on = p
            self.device.on()
            p.fired_t = self.clock()
            self._stop.wait(self.pulse_s)
            if self.feedback is not None and not self.feedback.is_active:
                raise GpioError("the gate feedback stayed off: the gate did not energise")
            self.device.off()
            self._on = None
        except Exception as e:  # a GPIO fault: reported per pulse, the runtime alarms
            p.error, self._on = f"{type(e).__name__}: {e}", None
            with contextlib.suppress(Exception):
                self.device.off()
            self._finish(p, "error")
        else:
            self._finish(p, "fired")

    def _check_off(self, when: str) -> None:
        """With the output off, the feedback must be off: else the gate is stuck energised
        (reported once per episode; the alarm stays latched)."""
        if self.feedback is None:
            return
        on = bool(self.feedback.is_active)
        if on and not self.stuck:
            self.counts["stuck"] += 1
            reason = f"gate stuck energised {when}: the gate feedback is on, the output off"
            log.critical(reason)
            if self.on_stuck is not None:
                try:
                    self.on_stuck(reason)
                except Exception:
                    log.exception("pulse thread: reporting a stuck gate failed")
        self.stuck = on

    def _crashed(self, stage: Stage, exc: BaseException) -> bool:
        # A crash in the middle of a pulse must not leave the output energised (with accept
        # wiring, every container would pass); then report it and restart: the pulse
        # thread must outlive any bug.
        with contextlib.suppress(Exception):
            self.device.off()
        p, self._on = self._on, None
        if p is not None:  # cut short: reported like a pulse whose write failed
            p.error = f"pulse thread crashed: {exc!r}"
            with contextlib.suppress(Exception):
                self._finish(p, "error")
        if self.on_crash is not None:
            try:
                self.on_crash(exc)
            except Exception:
                log.exception("pulse thread: reporting its crash failed")
        return not self._stop.is_set()

    def close(self) -> None:
        """Cancel pending pulses, end the thread, leave the output off. Idempotent."""
        self._stop.set()
        self._wake.set()
        self.stage.stop()
        self.stage.join(timeout=2.0)
        with self._lock:
            for _, _, p in self._heap:
                if p.state == "pending":
                    p.state = "cancelled"
            self._heap.clear()
        with contextlib.suppress(Exception):  # the device may already be closed
            self.device.off()


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

    def set_alarm(self, on: bool) -> None:
        if self.alarm is not None:
            self.alarm.value = on

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
