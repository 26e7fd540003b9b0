"""The simulated line: containers with known truth through the real runtime, in real time,
judged by what physically happened at the gate.

A line thread plays the machine: for each container it shows the container to the
camera, drives the trigger input (gpiozero MockPin, so the runtime's own edge handler
and debounce run), and moves on at the line rate. The gate model then reads the gate
output's pin history (not the runtime's records) at each container's gate time to decide
whether it physically passed, and compares that with the truth and with the audit DB.

Faults are injected where they really happen: in the camera (drop, corrupt, black,
frozen, stall), the backend call (error, NaN, slow, stale output), the decision code (a crash of the
inference stage), the gate output pin (`gpio_error`), the trigger input (`bounce`) and
the SQLite INSERT (`audit_error`).
"""

from __future__ import annotations

import collections
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from gpiozero.pins.mock import MockConnectedPin, MockPin, PinState

from .audit import audit_files
from .errors import FodError
from .gpio import GATE_LEAD_S
from .jobs import Job
from .knapp import read_sequences, share
from .sim_camera import SimCamera

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
# another container's gate time, which the runtime must put on record and alarm for.
HARDWARE_FAULTS = ("relay_welded", "gpio_hang")
HANG_S = (0.03, 2.5)  # how long a blocked gate write blocks (uniform, seeded)
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

    def chance(self, kind: str) -> bool:
        """For faults that strike later than the container's own processing (the gate
        output, the audit INSERT): drawn at each call with the fault's probability."""
        with self._lock:
            hit = kind in self.faults and self.streams[kind].random() < self.faults[kind]
            self.injected[kind] = self.injected.get(kind, 0) + hit
        return hit


class FaultyPin(MockConnectedPin):
    """A MockPin whose writes raise when the injector says so (a GPIO driver error), block
    before they land (`gpio_hang`), or whose relay welds on (it ignores every write after
    an energising one). Given an `input_pin`, it drives that input as the relay's auxiliary
    contact would (the gate feedback)."""

    injector: Optional[Injector] = None
    welded = False

    def _set_state(self, value: Any) -> None:
        if self.welded:
            return
        if self.injector is not None and self.injector.chance("gpio_hang"):
            time.sleep(self.injector.hang_s())  # the driver call blocks, then the write lands
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


@dataclass(frozen=True)
class Container:
    id: str
    video: Path
    label: str  # accept | reject


def load_sequences(folder: Path) -> List[Container]:
    path = folder / "sequences.json"
    out = []
    for cid, video, label in read_sequences(path):
        # refused before the line starts, not as camera faults on the line
        if video is None:
            raise FodError(f"{path}: {cid} names no video ('path')")
        if not (folder / video).is_file():
            raise FodError(f"{path}: {cid}'s video {folder / video} not found")
        out.append(Container(cid, folder / video, label))
    return out


@dataclass
class Physical:
    """One container as the machine saw it."""

    id: str
    truth: str
    edge_t: float  # monotonic time the machine raised the trigger
    passed: Optional[bool] = None  # from the gate output's pin history
    audit: Optional[str] = None  # the last audit row's decision
    faulted: bool = False  # any of its audit rows names a fault
    fault: Optional[str] = None  # the last audit row's fault


def drive_trigger(pin: MockPin, bounce: bool) -> Tuple[float, int]:
    """One rising edge on the trigger input (with contact bounce if asked): its time and
    the bounce edges driven after it. The contact chatters for 0.3 ms: three more rising
    edges, each stamped when it physically happened (as a kernel stamps GPIO edges),
    whenever this thread gets to deliver it, so a preempted thread cannot turn a bounce into
    a second trigger."""
    t = time.monotonic()
    pin.drive_high()
    edges = 0
    if bounce:
        for k in range(3):
            drive_at(pin, False, t + (2 * k + 1) * 50e-6)
            drive_at(pin, True, t + (2 * k + 2) * 50e-6)
            edges += 1
    time.sleep(0.001)
    pin.drive_low()
    return t, edges


def drive_at(pin: MockPin, high: bool, t: float) -> None:
    """Drive an input MockPin to `high` with the edge stamped at monotonic time `t` (at the
    latest now): MockPin stamps an edge when it is driven, and its callbacks read the edge's
    time (gpiozero's `active_time`) from that stamp (`_last_change`), which this sets
    instead. tests/test_gpio.py checks it against the installed gpiozero."""
    if bool(pin.state) == high:
        return
    t = max(pin._last_change, min(t, time.monotonic()))
    pin._state = high
    pin.states.append(PinState(t - pin._last_change, high))
    pin._last_change = t
    if pin.edges in ("both", "rising" if high else "falling") and pin.when_changed is not None:
        pin._call_when_changed()


def pin_intervals(pin: MockPin, t_clear: float) -> List[Tuple[float, float]]:
    """(on, off) monotonic intervals from a MockPin history (deltas since the previous change)."""
    t, on_at, out = t_clear, None, []
    for s in pin.states[1:]:
        t += s.timestamp
        if s.state and on_at is None:
            on_at = t
        elif not s.state and on_at is not None:
            out.append((on_at, t))
            on_at = None
    if on_at is not None:
        out.append((on_at, float("inf")))
    return out


def gate_model(
    containers: List[Physical],
    gate_on: List[Tuple[float, float]],
    delay_s: float,
    pulse_s: float,
    energise_to: str,
) -> None:
    """Set `passed` for each container: the gate samples its output from the gate time for a
    pulse length (plus GATE_LEAD_S of lead); energised means pass (accept wiring) or eject."""
    for c in containers:
        g0, g1 = c.edge_t + delay_s - GATE_LEAD_S, c.edge_t + delay_s + pulse_s
        energised = any(a < g1 and b > g0 for a, b in gate_on)
        c.passed = energised if energise_to == "accept" else not energised


def attach_audit(containers: List[Physical], folder: Path, after_seq: int = 0) -> int:
    """Each container's last audit row (rows carry the id the line gave its trigger), from
    the rows after `after_seq` (an appended run's own); returns the audit rows of containers
    that never physically existed (ghost triggers)."""
    by_id = {c.id: c for c in containers}
    ghosts = 0
    for path in audit_files(folder):
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute(
            "SELECT container_id, decision, fault FROM containers WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        for cid, decision, fault in rows.fetchall():
            c = by_id.get(cid)
            if c is None:
                ghosts += 1
                continue
            c.audit = decision  # rows in seq order: the last one (an amendment) stands
            c.faulted |= fault is not None
            c.fault = fault
        db.close()
    return ghosts


def _uncertain(c: Physical) -> bool:
    """On record as passed, not sure of it (a blocked gate write), and it did not pass."""
    return c.fault == "gate_uncertain" and c.audit == "accept" and not c.passed


def judge(containers: Sequence[Physical]) -> Dict[str, Any]:
    rej = [c for c in containers if c.truth == "reject"]
    ok = [c for c in containers if c.truth == "accept"]
    return {
        "containers": len(containers),
        "physically_passed": sum(bool(c.passed) for c in containers),
        "passed_defective": sum(bool(c.passed) for c in rej),
        # of those, the ones no fault touched: the model's own misses (its detection rate)
        "missed_by_model": sum(bool(c.passed) and not c.faulted for c in rej),
        "passed_faulty": sum(bool(c.passed) and c.faulted for c in containers),
        # The audit says otherwise than the gate did. A container on record as `may have
        # passed` (gate_uncertain: a blocked gate write) that the gate rejected is not one:
        # the audit claims the worse outcome, and says it is not sure.
        "audit_disagrees": sum(
            c.audit is None or ((c.audit == "accept") != bool(c.passed) and not _uncertain(c))
            for c in containers
        ),
        "audit_uncertain": sum(c.fault == "gate_uncertain" for c in containers),
        "detection_rate": share([not c.passed for c in rej]),
        "false_reject_rate": share([not c.passed for c in ok]),
        # A fault rejects whatever the model saw; the model's own rates leave those out.
        "fault_rejects": sum(not c.passed and c.faulted for c in containers),
        "model_detection_rate": share([not c.passed for c in rej if not c.faulted]),
        "model_false_reject_rate": share([not c.passed for c in ok if not c.faulted]),
    }


# The simulated line's safety invariants, each a count in the summary that must be 0:
# a container with a fault physically passed, the audit says otherwise than the gate did,
# or the audit holds containers that never existed. A defective container passing with no
# fault involved is the detector's miss (its detection rate), not a broken invariant.
SAFETY_COUNTS = ("passed_faulty", "audit_disagrees", "ghost_containers")


def safety_violations(summary: Dict[str, Any]) -> List[str]:
    """`name=count` for each safety invariant the run broke (empty: none)."""
    return [f"{k}={summary[k]}" for k in SAFETY_COUNTS if summary.get(k)]


def _sleep_until(t: float) -> None:
    """Until monotonic time `t` (at once if it has passed)."""
    now = time.monotonic()
    if t > now:
        time.sleep(t - now)


def run_line(
    rt: Any,
    trigger_pin: MockPin,
    camera: SimCamera,
    injector: Injector,
    containers: List[Container],
    count: int,
    rate_per_min: float,
) -> List[Physical]:
    """Play the machine: `count` containers at the line rate (container i is
    containers[i % len]), each shown to the camera and announced by a trigger edge; the
    runtime's own trigger handler (debounce, edge time) creates its job."""
    period = 60.0 / rate_per_min
    current: List[Tuple[str, int]] = [("", 0)]  # the container in front of the camera

    def on_edge(t: float) -> None:
        cid, n = current[0]
        current[0] = (cid, n + 1)
        rt.submit(Job(cid if n == 0 else f"{cid}-ghost{n}", t, camera.read))

    rt.io.on_trigger(on_edge)
    out: List[Physical] = []
    # Each video is opened ahead of its trigger: a trigger late by an open lets the
    # previous container's capture read the next one's frames.
    reader = camera.open(containers[0].video)
    start = time.monotonic() + 0.05
    try:
        for i in range(count):
            c = containers[i % len(containers)]
            t = start + i * period
            _sleep_until(t)
            cid = f"{c.id}-{i}"
            injector.draw(cid)
            camera.show(cid, reader)
            current[0] = (cid, 0)
            edge, chatter = drive_trigger(trigger_pin, injector.take("bounce", cid))
            injector.bounce_edges += chatter
            out.append(Physical(f"{c.id}-{i}", c.label, edge))
            reader = None
            if i + 1 < count:
                # Half a period on: this container's capture (tens of ms) is done, and an
                # open (FFmpeg probing) beside it would delay its frames.
                _sleep_until(t + period / 2)
                reader = camera.open(containers[(i + 1) % len(containers)].video)
    finally:
        if reader is not None:
            reader.close()
    return out
