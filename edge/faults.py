"""Faults injected where they really happen, for the simulated line (`fod simulate
--faults`): in the camera (drop, corrupt, black, frozen, stall: `edge.sim_camera`), the
backend call (error, NaN, slow, stale output, blind: `FaultyBackend`), the decision code (a
crash of the inference stage), the gate output pin (`gpio_error`, `gpio_hang`,
`gpio_off_error`, `relay_welded`: `FaultyPin`), the trigger input (`bounce`) and the SQLite INSERT
(`audit_error`: `audit_authorizer`). Each container's faults are drawn at its trigger
(`Injector`), seeded."""

from __future__ import annotations

import collections
import random
import sqlite3
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from gpiozero.pins.mock import MockConnectedPin

from .errors import FodError

FAULT_KINDS = (
    "camera_drop",
    "corrupt",
    "black",
    "frozen",
    "stall",  # the camera
    "nan",
    "backend_error",
    "slow",
    "stale_output",  # the backend call
    "thread_crash",  # the decision code raises in the inference stage
    "gpio_error",  # the gate output pin raises
    "bounce",  # the trigger input bounces
    "audit_error",  # an INSERT fails in SQLite
)
# Faults of the machine that no software on the unit can prevent (`all` leaves them out):
# the gate relay's contacts weld at an energising write and the gate stays energised (the
# run must come out red, `safety_violations`; with the gate feedback the alarm is raised);
# a gate write blocks in the driver for 0.03-2.5 s and lands late (`gpio_hang`), maybe at
# another container's gate time, which the runtime must put on record and alarm for; the
# driver fails at an off write and every write for 0.1-1.5 s (`gpio_off_error`), so the
# gate stays energised until a write gets through again: on record and alarmed as well.
HARDWARE_FAULTS = ("relay_welded", "gpio_hang", "gpio_off_error")
HANG_S = (0.03, 2.5)  # how long a blocked gate write blocks (uniform, seeded)
OFF_ERROR_S = (0.1, 1.5)  # how long the driver fails after a failed off (uniform, seeded)
# Faults that last from the container they strike to the end of the run (`all` leaves them
# out: after one, the runtime decides nothing more): `blind`, the engine goes blind - every
# score a fifth of the model's, finite and in range, which no per-frame check can tell from
# a clean frame; the reference self-test (model.reference_every_s) must stop the line.
ONSET_FAULTS = ("blind",)


def parse_faults(spec: Optional[str]) -> Dict[str, float]:
    """'camera_drop=0.02,nan=0.05' or 'all=0.05' -> probabilities per container."""
    out: Dict[str, float] = {}
    for part in filter(None, (spec or "").split(",")):
        name, _, value = part.partition("=")
        if name not in (*FAULT_KINDS, *HARDWARE_FAULTS, *ONSET_FAULTS, "all"):
            kinds = ", ".join((*FAULT_KINDS, *HARDWARE_FAULTS, *ONSET_FAULTS))
            raise FodError(f"--faults: unknown fault {name!r}; choose from all, {kinds}")
        try:
            p = float(value)
        except ValueError:
            raise FodError(f"--faults: {name} needs a probability, got {value!r}") from None
        if not 0 <= p <= 1:
            raise FodError(f"--faults: {name}={p} is not a probability")
        for k in FAULT_KINDS if name == "all" else (name,):
            out[k] = p
    return out


class Injector:
    """Which faults hit which container: drawn once per container at its trigger, seeded;
    each drawn fault fires once, at the first place it can happen in that container's own
    processing (the stage says which container it holds), and is counted then."""

    def __init__(self, faults: Dict[str, float], seed: int) -> None:
        self.faults, self.rng = faults, random.Random(seed)
        # Faults drawn per call (`chance`) strike in other threads than the triggers' draws:
        # one stream per kind keeps every stream the same whatever the threads' interleaving.
        self.streams = {k: random.Random(f"{seed}:{k}") for k in faults}
        self._hang_rng = random.Random(f"{seed}:hang_s")  # how long each blocked write blocks
        self._off_rng = random.Random(f"{seed}:off_error_s")  # how long the writes then fail
        self.active: collections.OrderedDict[str, Dict[str, bool]] = collections.OrderedDict()
        self.injected: Dict[str, int] = {k: 0 for k in faults}
        self.bounce_edges = 0  # chatter edges driven after the triggers' own (bounce)
        self._lock = threading.Lock()  # stages of several threads take from it

    def draw(self, cid: str) -> None:
        with self._lock:
            self.active[cid] = {k: self.rng.random() < p for k, p in self.faults.items()}
            while len(self.active) > 256:  # containers long past their gate
                self.active.popitem(last=False)

    def take(self, kind: str, cid: Optional[str]) -> bool:
        with self._lock:
            flags = self.active.get(cid or "")
            if flags and flags.get(kind):
                flags[kind] = False
                self.injected[kind] += 1
                return True
        return False

    def hang_s(self) -> float:
        """How long this blocked write blocks (its own seeded stream)."""
        with self._lock:
            return self._hang_rng.uniform(*HANG_S)

    def off_error_s(self) -> float:
        """How long the driver fails from this failed off (its own seeded stream)."""
        with self._lock:
            return self._off_rng.uniform(*OFF_ERROR_S)

    def chance(self, kind: str) -> bool:
        """For faults that strike later than the container's own processing (the gate
        output, the audit INSERT): drawn at each call with the fault's probability."""
        with self._lock:
            hit = kind in self.faults and self.streams[kind].random() < self.faults[kind]
            self.injected[kind] = self.injected.get(kind, 0) + hit
        return hit


class FaultyPin(MockConnectedPin):
    """A MockPin whose writes raise when the injector says so (a GPIO driver error; at an
    off, `gpio_off_error`, every write for a while after), block before they land
    (`gpio_hang`), or whose relay welds on (it ignores every write after an energising
    one). Given an `input_pin`, it drives that input as the relay's auxiliary contact would
    (the gate feedback)."""

    injector: Optional[Injector] = None
    welded = False
    failing_until = 0.0  # monotonic time until which every write fails (gpio_off_error)

    def _set_state(self, value: Any) -> None:
        if self.welded:
            return
        if self.injector is not None and self.injector.chance("gpio_hang"):
            time.sleep(self.injector.hang_s())  # the driver call blocks, then the write lands
        now = time.monotonic()
        if now < self.failing_until:
            raise OSError(f"injected GPIO fault on {self.info.name} (the driver is failing)")
        # Only an off that ends a pulse (the output on): setup's safe-state write is not one.
        off = not value and self._get_state()
        if off and self.injector is not None and self.injector.chance("gpio_off_error"):
            self.failing_until = now + self.injector.off_error_s()
            raise OSError(f"injected GPIO fault on {self.info.name} at an off write")
        if value and self.injector is not None and self.injector.chance("gpio_error"):
            raise OSError(f"injected GPIO fault on {self.info.name}")
        super()._set_state(value)
        if value and self.injector is not None and self.injector.chance("relay_welded"):
            self.welded = True


class FaultyBackend:
    """Wraps a backend: raises, returns NaN, stalls or hands back its previous call's
    outputs (a run that did not happen, read from reused buffers), as the injector says;
    or goes blind for good (`blind`), every call from then on, the self-test's too."""

    def __init__(
        self, inner: Any, injector: Injector, slow_s: float, holder: Callable[[], Optional[str]]
    ) -> None:
        self.inner, self.injector, self.slow_s = inner, injector, slow_s
        self.holder = holder  # the container the inference stage is working on
        self.last: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self.blind = False

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if self.injector.take("backend_error", self.holder()):
            raise RuntimeError("injected backend error")
        if self.injector.take("slow", self.holder()):
            time.sleep(self.slow_s)
        last = self.last  # the first call has nothing to repeat: the fault waits a call
        if last is not None and self.injector.take("stale_output", self.holder()):
            return last[0].copy(), last[1].copy()
        boxes, scores = self.inner.infer(images)
        if "stale_output" in self.injector.faults:  # only a run that may repeat them keeps them
            self.last = (boxes.copy(), scores.copy())
        if self.injector.take("nan", self.holder()):
            scores = np.full_like(scores, np.nan)
        self.blind = self.blind or self.injector.take("blind", self.holder())
        if self.blind:
            scores = scores * np.float32(0.2)
        return boxes, scores

    def close(self) -> None:
        self.inner.close()


def audit_authorizer(injector: Injector, holder: Callable[[], Optional[str]]) -> Callable[..., int]:
    """SQLite authorizer that denies the first INSERT of a container drawn for `audit_error`
    (`holder` names the container the audit stage is recording)."""

    def auth(action: int, arg1: Any, *rest: Any) -> int:
        if (
            action == sqlite3.SQLITE_INSERT
            and arg1 == "containers"
            and injector.take("audit_error", holder())
        ):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    return auth
