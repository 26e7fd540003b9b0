"""A gpiozero pin factory for NVIDIA Jetson dev kits over Jetson.GPIO.

No public gpiozero factory exists for Jetson; this one is selected with
`gpio.pin_factory = "jetson"` or `GPIOZERO_PIN_FACTORY=jetson` (entry point in the group
`gpiozero_pin_factories`), for gpiozero 1.6 (JetPack 5, Python 3.8) and 2.x.

- Pins are the 40-pin header's: `BOARD<n>` (physical pin), or `GPIO<n>` / `BCM<n>` / a
  bare number in the Raspberry-Pi-compatible numbering the header follows (GPIO17 is
  BOARD11), so a line config moves between a Pi and a Jetson unchanged. Jetson.GPIO's own
  CVM names are not accepted: its `GPIO27` is BOARD15, where gpiozero's is BOARD13.
- Jetson.GPIO runs in BOARD mode (its mode is fixed once set) and cannot set pulls
  (`setup()` ignores `pull_up_down`): inputs need external pull resistors; the pull a
  device asks for is recorded (gpiozero derives the active level from it) and logged.
- Edges: Jetson.GPIO's callback thread calls in with a few ms of jitter; the edge is
  timestamped on the monotonic clock as the callback starts (gpiozero's ticks), and
  debounced in software on that clock (Jetson.GPIO's own bouncetime works on wall time).
- Board restrictions from NVIDIA's pin tables: AGX Orin dev kit BOARD11 is output only,
  AGX Xavier dev kit BOARD36 input only.

The hardware calls go through a small driver object (Jetson.GPIO by default); not
exercised on the project's machines. The pin bookkeeping, names, restrictions and
debounce are tested with gpiozero's own devices on a fake driver.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

# Header pin (BOARD) -> Raspberry-Pi-compatible GPIO number, for the pins Jetson.GPIO can
# drive on the Orin and Xavier dev kits' 40-pin header.
BOARD_TO_BCM: Dict[int, int] = {
    7: 4,
    11: 17,
    12: 18,
    13: 27,
    15: 22,
    16: 23,
    18: 24,
    19: 10,
    21: 9,
    22: 25,
    23: 11,
    24: 8,
    26: 7,
    29: 5,
    31: 6,
    32: 12,
    33: 13,
    35: 19,
    36: 16,
    37: 26,
    38: 20,
    40: 21,
}
BCM_TO_BOARD = {bcm: board for board, bcm in BOARD_TO_BCM.items()}

# Board key -> (output-only pins, input-only pins), from NVIDIA's Jetson.GPIO pin tables.
RESTRICTIONS: Dict[str, Tuple[Set[int], Set[int]]] = {
    "agx-orin": ({11}, set()),
    "agx-xavier": (set(), {36}),
    "orin": (set(), set()),  # Orin NX / Nano dev kits
    "xavier-nx": (set(), set()),
    "unknown": (set(), set()),
}


class JetsonPinError(ValueError):
    """A pin name or use this board does not support."""


def board_pin(spec: Any) -> int:
    """The header (BOARD) number of a pin spec: 'BOARD11', 'GPIO17', 'BCM17', 17 -> 11."""
    text = str(spec).strip().upper()
    table: Optional[Dict[int, int]] = BCM_TO_BOARD  # a bare number: gpiozero's numbering
    for prefix in ("BOARD", "GPIO", "BCM"):
        if text.startswith(prefix):
            text, table = text[len(prefix) :], None if prefix == "BOARD" else BCM_TO_BOARD
            break
    if not text.isdigit():
        raise JetsonPinError(f"pin {spec!r}: expected BOARD<n>, GPIO<n>, BCM<n> or a number")
    n = int(text)
    board = n if table is None else table.get(n, -1)
    if board not in BOARD_TO_BCM:
        raise JetsonPinError(f"pin {spec!r}: not a GPIO pin of the Jetson 40-pin header")
    return board


def detect_board(model: str) -> str:
    """Board key from /proc/device-tree/model (e.g. 'NVIDIA Jetson AGX Orin Developer Kit')."""
    m = model.lower()
    if "orin" in m:
        return "agx-orin" if "agx" in m else "orin"
    if "xavier" in m:
        return "xavier-nx" if "nx" in m else "agx-xavier"
    return "unknown"


class Debounce:
    """Accept an edge only if `bounce_s` has passed since the last accepted one, on the
    clock the edges are stamped with (monotonic), never wall time."""

    def __init__(self, bounce_s: Optional[float]) -> None:
        self.bounce_s = bounce_s
        self._last: Optional[float] = None

    def accept(self, t: float) -> bool:
        if self.bounce_s and self._last is not None and t - self._last < self.bounce_s:
            return False
        self._last = t
        return True


class JetsonGpioDriver:
    """The only code that calls Jetson.GPIO (BOARD numbering, set once)."""

    def __init__(self) -> None:
        import Jetson.GPIO as GPIO

        self.gpio = GPIO
        GPIO.setwarnings(False)
        if GPIO.getmode() is None:
            GPIO.setmode(GPIO.BOARD)
        elif GPIO.getmode() != GPIO.BOARD:
            raise JetsonPinError("Jetson.GPIO is already in a mode other than BOARD")

    def setup_output(self, pin: int, high: bool) -> None:
        self.gpio.setup(pin, self.gpio.OUT, initial=self.gpio.HIGH if high else self.gpio.LOW)

    def setup_input(self, pin: int) -> None:
        self.gpio.setup(pin, self.gpio.IN)

    def write(self, pin: int, high: bool) -> None:
        self.gpio.output(pin, self.gpio.HIGH if high else self.gpio.LOW)

    def read(self, pin: int) -> bool:
        return bool(self.gpio.input(pin))

    def watch(self, pin: int, callback: Callable[[int], None]) -> None:
        # Both edges; debounce is ours, on the monotonic clock (bouncetime would be wall time).
        self.gpio.add_event_detect(pin, self.gpio.BOTH, callback=callback)

    def unwatch(self, pin: int) -> None:
        self.gpio.remove_event_detect(pin)

    def release(self, pin: int) -> None:
        self.gpio.cleanup(pin)


def _pin_info(board: int) -> Any:
    """gpiozero's PinInfo for a header pin, in the shape of the installed version."""
    from gpiozero.pins import PinInfo

    row, col = (board + 1) // 2, 2 - board % 2
    if "names" in PinInfo._fields:  # gpiozero 2.x
        bcm = BOARD_TO_BCM[board]
        names = frozenset({f"BOARD{board}", f"GPIO{bcm}", f"BCM{bcm}", str(bcm)})
        return PinInfo(board, f"BOARD{board}", names, "", row, col, frozenset({"gpio"}))
    return PinInfo(board, f"GPIO{BOARD_TO_BCM[board]}", False, row, col)  # pragma: no cover


def _base_classes() -> Tuple[Any, Any]:
    from gpiozero.pins import Factory, Pin

    return Factory, Pin


_Factory, _Pin = _base_classes()


class JetsonFactory(_Factory):  # type: ignore[misc,valid-type]
    """gpiozero pin factory for Jetson dev kits (see the module docstring)."""

    def __init__(self, driver: Any = None, model: Optional[str] = None) -> None:
        super().__init__()
        self.driver = driver if driver is not None else JetsonGpioDriver()
        if model is None:
            try:
                model = Path("/proc/device-tree/model").read_text(errors="replace")
            except OSError:
                model = ""
        self.model = model.strip("\0\n ")
        self.board = detect_board(self.model)
        self._pins: Dict[int, JetsonPin] = {}
        self._held: Dict[int, List[Any]] = {}
        self._lock = threading.Lock()

    # Reservations keyed by header pin, whatever name the device used (gpiozero 1.6 and 2.x
    # pass different spellings; the board_info lookup of 2.x assumes a Raspberry Pi).
    def reserve_pins(self, requester: Any, *names: Any) -> None:
        from gpiozero import GPIOPinInUse

        with self._lock:
            for name in names:
                board = board_pin(name)
                # Weak references, as gpiozero's own factories hold them: a device that
                # failed half-way through its constructor frees its pins when collected.
                held = [r() for r in self._held.get(board, [])]
                held = [d for d in held if d is not None and d is not requester]
                if held:
                    raise GPIOPinInUse(f"pin BOARD{board} is already in use by {held[0]!r}")
                self._held.setdefault(board, []).append(weakref.ref(requester))

    def release_pins(self, reserver: Any, *names: Any) -> None:
        with self._lock:
            for name in names:
                board = board_pin(name)
                self._held[board] = [
                    r for r in self._held.get(board, []) if r() not in (reserver, None)
                ]

    def release_all(self, reserver: Any) -> None:
        self.release_pins(reserver, *[b for b in self._held])

    def pin(self, spec: Any) -> JetsonPin:
        board = board_pin(spec)
        with self._lock:
            if board not in self._pins:
                self._pins[board] = JetsonPin(self, board)
            return self._pins[board]

    def ticks(self) -> float:
        return time.monotonic()

    def ticks_diff(self, later: float, earlier: float) -> float:
        return later - earlier

    def _get_board_info(self) -> Any:
        return None  # not a Raspberry Pi: gpiozero's board tables do not apply

    def _get_pi_info(self) -> Any:  # gpiozero 1.6 asks for it by this name
        return None

    def close(self) -> None:
        for p in list(self._pins.values()):
            p.close()
        self._pins.clear()


class JetsonPin(_Pin):  # type: ignore[misc,valid-type]
    def __init__(self, factory: JetsonFactory, board: int) -> None:
        super().__init__()
        # `board` is the header pin the driver drives; `number` gpiozero's numbering, which
        # gpiozero 1.6 hands back to release_pins (and bare numbers mean in board_pin).
        self.factory, self.board, self.number = factory, board, BOARD_TO_BCM[board]
        self._function = "input"
        self._configured = False
        self._state = False
        self._bounce: Optional[float] = None
        self._edges = "both"
        self._when_changed: Optional[Callable[..., None]] = None
        self._debounce = Debounce(None)
        self._watching = False
        self._pull = "floating"
        out_only, in_only = RESTRICTIONS[factory.board]
        self._output_only, self._input_only = board in out_only, board in in_only

    def __repr__(self) -> str:
        return f"BOARD{self.board}"

    def _get_info(self) -> Any:
        return _pin_info(self.board)

    def close(self) -> None:
        if not self._configured:
            return
        self._unwatch()
        if self._function == "output":
            self.factory.driver.write(self.board, False)  # outputs end off (no release)
        self.factory.driver.release(self.board)
        self._configured = False

    def _get_function(self) -> str:
        return self._function

    def _set_function(self, value: str) -> None:
        if value not in ("input", "output"):
            raise JetsonPinError(f"BOARD{self.board}: function {value!r} not supported")
        if value == "input" and self._output_only:
            raise JetsonPinError(f"BOARD{self.board} is output-only on the {self.factory.board}")
        if value == "output" and self._input_only:
            raise JetsonPinError(f"BOARD{self.board} is input-only on the {self.factory.board}")
        self._unwatch()
        if value == "output":
            self.factory.driver.setup_output(self.board, self._state)
        else:
            self.factory.driver.setup_input(self.board)
        self._function, self._configured = value, True
        self._update_watch()

    def _get_state(self) -> bool:
        if self._function == "input":
            return self.factory.driver.read(self.board)
        return self._state

    def _set_state(self, value: Any) -> None:
        if self._function != "output":
            from gpiozero import PinSetInput

            raise PinSetInput(f"cannot set the state of input pin BOARD{self.board}")
        self._state = bool(value)
        self.factory.driver.write(self.board, self._state)

    def _get_pull(self) -> str:
        return self._pull

    def _set_pull(self, value: str) -> None:
        """Records the pull the device expects (gpiozero derives the active level from it);
        the resistor itself must be on the board: Jetson.GPIO cannot set one."""
        if value not in ("up", "down", "floating"):
            raise JetsonPinError(f"pull {value!r} not supported")
        if value != "floating" and value != self._pull:
            log.warning(
                "BOARD%d: pull-%s expected; Jetson.GPIO cannot set pulls, fit an external "
                "pull-%s resistor",
                self.board,
                value,
                value,
            )
        self._pull = value

    def _get_bounce(self) -> Optional[float]:
        return self._bounce

    def _set_bounce(self, value: Optional[float]) -> None:
        if value is not None and value < 0:
            raise JetsonPinError("bounce must be 0 or more")
        self._bounce = value
        self._debounce = Debounce(value)

    def _get_edges(self) -> str:
        return self._edges

    def _set_edges(self, value: str) -> None:
        if value not in ("both", "rising", "falling"):
            raise JetsonPinError(f"edges {value!r} not supported")
        self._edges = value

    def _get_when_changed(self) -> Optional[Callable[..., None]]:
        return self._when_changed

    def _set_when_changed(self, value: Optional[Callable[..., None]]) -> None:
        self._when_changed = value
        self._update_watch()

    def _update_watch(self) -> None:
        want = self._when_changed is not None and self._function == "input" and self._configured
        if want and not self._watching:
            self.factory.driver.watch(self.board, self._on_edge)
            self._watching = True
        elif not want:
            self._unwatch()

    def _unwatch(self) -> None:
        if self._watching:
            self.factory.driver.unwatch(self.board)
            self._watching = False

    def _on_edge(self, channel: int) -> None:
        """Jetson.GPIO's callback thread: stamp first, then read, debounce and filter."""
        ticks = self.factory.ticks()
        state = self.factory.driver.read(self.board)
        if not self._debounce.accept(ticks):
            return
        if (self._edges == "rising" and not state) or (self._edges == "falling" and state):
            return
        cb = self._when_changed
        if cb is not None:
            cb(ticks, state)
