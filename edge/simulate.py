"""The simulated line: containers with known truth through the real runtime, in real time,
judged by what physically happened at the gate.

A line thread plays the machine: for each container it shows the container to the
camera, drives the trigger input (gpiozero MockPin, so the runtime's own edge handler
and debounce run), and moves on at the line rate. The gate model then reads the gate
output's pin history (not the runtime's records) at each container's gate time to decide
whether it physically passed, and compares that with the truth and with the audit DB.

Faults are injected where they really happen (`edge.faults`).
"""

from __future__ import annotations

import math
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from gpiozero.pins.mock import MockPin, PinState

from .alarm import HEARTBEAT_TIMEOUT_S
from .audit import audit_files
from .errors import FodError
from .faults import Injector
from .gpio import GATE_LEAD_S
from .jobs import Job
from .knapp import read_sequences, sequences_frame_size, share
from .sim_camera import SimCamera
from .sources import SourceError, video_info


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


def check_videos(path: Path, containers: Sequence[Container], frames: int) -> Tuple[int, int]:
    """The frame size (w, h) of the videos of `containers` (those a run shows), each opened
    and read as the simulated camera reads it. A video that does not open or decode, holds
    fewer than the `frames` a container takes, or differs in size from the others or from
    what `path` declares, would be a `camera_drop` or `corrupt_frame` reject of its
    container on the line, the set's fault and not the unit's: refused before the line
    starts, naming it."""
    short: List[Tuple[str, int]] = []
    sizes: Dict[Tuple[int, int], str] = {}  # frame size -> the first container of that size
    for c in containers:
        try:
            info = video_info(c.video, frames)
        except SourceError as e:
            raise FodError(f"{path}: {c.id}'s video: {e}") from None
        if info.frames < frames:
            short.append((c.id, info.frames))
        sizes.setdefault((info.width, info.height), c.id)
    if short:
        fewest = min(n for _, n in short)
        raise FodError(
            f"{path}: {short[0][0]}'s video holds {short[0][1]} frame(s), fewer than the "
            f"{frames} a container takes here ({len(short)} of {len(containers)} containers "
            f"short; the fewest, {fewest}: pass --frames {fewest} or fewer)"
        )
    if len(sizes) > 1:
        seen = ", ".join(f"{cid} {w}x{h}" for (w, h), cid in sizes.items())
        raise FodError(f"{path}: videos of more than one frame size ({seen}): one camera, one size")
    ((w, h), cid), *_ = sizes.items()
    declared = sequences_frame_size(path)
    if declared is not None and declared != (w, h):
        raise FodError(
            f"{path}: declares {declared[0]}x{declared[1]} frames; its videos are {w}x{h} "
            f"({cid}'s and every other's)"
        )
    return w, h


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


def alarm_intervals(
    pin: MockPin, t_clear: float, t_end: float, mode: str
) -> List[Tuple[float, float]]:
    """When the alarm output showed the alarm, up to `t_end` (before the runtime closed),
    by `mode` (`gpio.alarm_energise_to`): "alarm", the pin's on-intervals; "ready", the gaps
    after it first came on; "heartbeat", as a controller timing it reads it: from
    HEARTBEAT_TIMEOUT_S after a change with none since, after its first change. Never on:
    the alarm throughout. The close's off is no alarm."""
    on = [(a, min(b, t_end)) for a, b in pin_intervals(pin, t_clear) if a < t_end]
    if mode == "alarm":
        return on
    if not on:
        return [(t_clear, math.inf)]
    if mode == "ready":
        gaps = [(b0, a1) for (_, b0), (a1, _) in zip(on, on[1:])]
        return gaps + ([(on[-1][1], math.inf)] if on[-1][1] < t_end else [])
    edges = sorted({t for a, b in on for t in (a, b) if t < t_end})  # every change
    out = [(a + HEARTBEAT_TIMEOUT_S, b) for a, b in zip(edges, edges[1:])]
    out.append((edges[-1] + HEARTBEAT_TIMEOUT_S, math.inf))
    return [(a, b) for a, b in out if a < min(b, t_end)]  # a gap longer than the timeout


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


def machine_fault_violations(summary: Dict[str, Any]) -> List[str]:
    """What must still hold under the machine's own faults (`HARDWARE_FAULTS`: a welded
    relay, a driver that fails or blocks), where containers can pass that no software on
    the unit stops: the audit says what the gate did (possibly passed counts), no ghost,
    and the alarm is up if anything with a fault passed. Empty: all held."""
    out = [f"{k}={summary[k]}" for k in ("audit_disagrees", "ghost_containers") if summary.get(k)]
    if summary.get("passed_faulty") and not summary.get("alarms"):
        out.append(f"passed_faulty={summary['passed_faulty']} without an alarm")
    return out


# `fod simulate` with no --rate: a real line's 30 containers a minute at most, fewer where
# this machine's model is slower, so that containers and reference rounds keep the model
# at most this busy. The rest is headroom for capture, the audit and jitter: at 0.9 busy
# on a 2-core CPU, queueing alone pushed decisions past a 3 s gate (`stall`).
AUTO_RATE_MAX = 30.0
AUTO_RATE_BUSY = 0.7


def sustainable_rate(frame_s: float, frames: int, round_frames: int, every_s: float) -> float:
    """Containers a minute that keep the model at most AUTO_RATE_BUSY of the time busy:
    `frames` model calls of `frame_s` s per container, plus a round of `round_frames`
    reference frames every `every_s` s (0 frames: no rounds). At least one a minute."""
    rounds = round_frames * frame_s / every_s if round_frames else 0.0  # share of the time
    spare = max(AUTO_RATE_BUSY - rounds, 0.05)
    rate = 60.0 * spare / (frames * max(frame_s, 1e-6))
    return round(max(1.0, min(AUTO_RATE_MAX, rate)), 1)


def auto_rate(rt: Any, frames: int, calls: int = 5) -> Tuple[float, float]:
    """(rate, seconds a camera frame takes): the running runtime's detector timed on a
    blank camera frame, the median of `calls` (content changes dense outputs' cost
    little). Timed beside the runtime's own threads, as the line will run it."""
    frame = np.zeros(rt.frame_shape, np.uint8)
    took = []
    try:
        rt.detector.detect([frame])  # a first call may set up buffers: not the line's pace
        for _ in range(calls):
            t = time.monotonic()
            rt.detector.detect([frame])
            took.append(time.monotonic() - t)
    except Exception as e:  # the line's own calls would fail alike: say so, not a traceback
        raise FodError(f"timing the model for the rate failed ({e}); give --rate") from e
    frame_s = float(np.median(took))
    st = rt.self_test  # None: the bundle has no reference frames, so no rounds
    n = len(st.sight.ref.images) if st is not None else 0
    return sustainable_rate(frame_s, frames, n, st.every_s if st is not None else 1.0), frame_s


def out_of_reach(frames: int, frame_s: float, delay_s: float) -> Optional[str]:
    """Why no container can be decided before its gate (its frames' model calls alone take
    longer than the trigger-to-gate delay), else None."""
    need = frames * frame_s
    if need < delay_s:
        return None
    return (
        f"{frames} frames take the model {need * 1e3:.0f} ms here, the gate is "
        f"{delay_s * 1e3:.0f} ms after the trigger: every container will be rejected for "
        "time, `stall` or `late` (--delay-ms sets another)"
    )


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
