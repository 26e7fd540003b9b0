"""Fail-safe inside the runtime, judged at the pins and in the audit: a stage that crashes,
stays down or hangs, the watchdog, a crashed pulse, an unusable trigger time, a full
garbage collection at the gate, a late frame, the outputs driven off on every exit."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.alarm import Alarm
from edge.app import line_runtime
from edge.pulses import PulseScheduler
from edge.runtime import Job
from edge.simulate import pin_intervals
from edge.supervise import Stage, Watchdog, sd_notify

from .gate_run import gated
from .test_recorder import _wait_for
from .test_runtime import _cfg, _frames, _rows, accept_one


def test_stage_crash_rejects_what_it_held_and_restarts(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    seen = []
    with line_runtime(cfg, MockFactory(), on_outcome=seen.append) as rt:
        decide, calls = rt.decide, {"n": 0}

        def flaky(*a):
            calls["n"] += 1
            if calls["n"] == 1:
                raise KeyError("a bug in the decision code")
            return decide(*a)

        rt.decide = flaky
        rt.submit(Job("crash", time.monotonic(), _frames()))
        assert rt.drain(10)
        rt.submit(Job("after", time.monotonic(), _frames()))  # the restarted stage decides it
        assert rt.drain(10)
        assert rt.alarm and rt.failed is None
    assert [(o.container_id, o.reject, o.fault) for o in seen] == [
        ("crash", True, "thread_crash"),
        ("after", False, None),
    ]


def test_a_stage_that_stays_down_fails_the_runtime_before_its_container_is_decided(
    bundle: Path, tmp_path: Path
) -> None:
    """No restarts allowed: the first crash fails the runtime. The alarm output is slow to
    switch (0.3 s); whoever sees the crashed container decided must already see the runtime
    failed (`fod run` and `fod simulate` read it right after the drain)."""
    cfg = _cfg(bundle, tmp_path, timing={"max_restarts": 0}, decision={"min_evidence": 99.0})
    f = MockFactory()
    with line_runtime(cfg, f) as rt:
        gate, alarm_pin = f.pin(cfg.gpio.ejector_pin), f.pin(cfg.gpio.alarm_pin)
        gate.clear_states()
        alarm = rt.raise_alarm

        def slow_alarm(reason: str) -> None:
            time.sleep(0.3)
            alarm(reason)

        def broken(*a):
            raise KeyError("a bug in the decision code")

        rt.raise_alarm, rt.decide = slow_alarm, broken
        rt.submit(Job("crash", time.monotonic(), _frames()))
        assert rt.drain(10)
        failed = rt.failed
        time.sleep(cfg.gpio.delay_ms / 1000 + 0.1)  # past the gate
        released, alarmed = [s.state for s in gate.states], alarm_pin.state
    assert failed == "stage inference crashed 1 times"
    assert released == [False] and alarmed  # an accepting rule: only the crash rejected it
    assert _rows(tmp_path)["crash"][:2] == ("reject", "thread_crash")


def test_close_never_hangs_on_a_stuck_stage(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path)
    seen = []
    with line_runtime(cfg, MockFactory(), on_outcome=seen.append) as rt:
        rt.submit(Job("hung", time.monotonic(), lambda: time.sleep(30)))  # a camera that hangs
        time.sleep(0.2)
        t = time.monotonic()
    assert time.monotonic() - t < 10  # closed around the stuck daemon thread
    assert [(o.container_id, o.reject, o.fault) for o in seen] == [("hung", True, "shutdown")]


def test_memory_stays_bounded(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, camera={"frames": 1}, decision={"min_evidence": 0.0})
    with line_runtime(cfg, MockFactory()) as rt:
        for i in range(300):
            rt.submit(Job(f"c{i}", time.monotonic(), _frames(1)))
            if i % 8 == 7:
                assert rt.drain(30)
        assert rt.drain(30)
        assert rt.counts["reject"] + rt.counts["accept"] == 300
        assert len(rt.recent) <= 256 and not len(rt.undecided) and not rt.ledger.armed
        assert len(rt.io.pulses.done) <= rt.io.pulses.done.maxlen


def test_watchdog_pets_only_while_every_stage_beats(tmp_path: Path) -> None:
    import socket

    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(1)
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(sock_path)})
    assert server.recv(64) == b"READY=1"
    assert not sd_notify("READY=1", {})  # no systemd: a no-op
    server.close()

    clock = {"t": 0.0}
    sent = []
    release = __import__("threading").Event()
    stuck = Stage("capture", release.wait, lambda s, e: True, lambda: clock["t"])
    stuck.start()  # its first step blocks (a hung driver call) from t = 0
    wd = Watchdog([stuck], 1.0, lambda m: sent.append(m) or True, lambda: clock["t"])
    clock["t"] = 0.5
    assert wd.tick() and sent == ["READY=1", "WATCHDOG=1"]
    clock["t"] = 5.0
    assert wd.stuck() == ["capture"] and not wd.tick() and len(sent) == 2
    stuck.stop()
    release.set()
    assert stuck.join(2)


def test_idle_pulse_and_alarm_threads_beat_within_a_short_gate_delay() -> None:
    """A fast line's gate delay (here 150 ms) is every stage's stall threshold: the pulse
    thread and the alarm output's writer must beat well within it while idle, or the unit
    reports them stuck - the alarm latched, the line stopped, watchdog pets withheld - on
    a healthy, idle line (their idle wait was 250 ms)."""

    class Quiet:  # a gate output and an alarm output that nothing switches
        def on(self) -> None: ...

        def off(self) -> None: ...

        def write_alarm(self, level: bool) -> None: ...

    pulses = PulseScheduler(Quiet(), 0.02)
    alarm = Stage("alarm", Alarm(Quiet(), None, 3, 60.0).step, lambda s, e: True)
    alarm.start()
    wd = Watchdog([pulses.stage, alarm], 0.15, lambda m: True)
    stuck = set()
    try:
        for _ in range(200):  # 2 s
            stuck.update(wd.stuck())
            time.sleep(0.01)
    finally:
        pulses.close()
        alarm.stop()
        alarm.join(2)
    assert not stuck, stuck


def test_frame_health() -> None:
    from edge.health import BadOutput, check_outputs, frame_fault

    rng = np.random.default_rng(0)
    ok = rng.integers(40, 200, (64, 80), dtype=np.uint8)
    assert frame_fault(ok, (64, 80)) is None
    assert frame_fault(ok[:32], (64, 80))[0] == "corrupt_frame"
    assert frame_fault(np.zeros_like(ok), (64, 80))[1].startswith("black")
    assert frame_fault(np.full_like(ok, 255), (64, 80))[1].startswith("saturated")
    assert frame_fault(np.full_like(ok, 120), (64, 80))[1].startswith("uniform")
    assert frame_fault(ok, (64, 80), ok.copy())[1].startswith("frozen")
    boxes = np.array([[[0, 0, 2, 2], [1, 1, 3, 3]]], np.float32)  # [1, 2, 4]
    with pytest.raises(BadOutput, match="non-finite scores"):
        check_outputs(boxes, np.array([[[0.1], [np.nan]]]))
    with pytest.raises(BadOutput, match="outside"):
        check_outputs(boxes, np.array([[[0.1], [7.0]]]))


def test_a_pulse_thread_crash_raises_the_alarm(bundle: Path, tmp_path: Path) -> None:
    """Accept wiring, c0 accepted. The gate's driver raises SystemExit after energising it
    (nothing a pulse handler catches): the gate must end off, the alarm pin go up, and the
    cut-short release be on record as not a pass."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory()
    ejector, alarm = f.pin(cfg.gpio.ejector_pin), f.pin(cfg.gpio.alarm_pin)
    real = ejector._set_state

    def energise_then_exit(value):
        real(value)
        if value:
            raise SystemExit("the driver exited")

    ejector._set_state = energise_then_exit
    with line_runtime(cfg, f) as rt:
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(3)
        # The crash handler runs on the stage's own thread, after the pulse's end: wait for
        # the alarm pin itself (set after the reason is recorded), not a fixed time.
        assert _wait_for(lambda: bool(alarm.state))
        assert any("pulses crashed" in r for r in rt.alarm_reasons)
        gate_on, alarm_on = ejector.state, alarm.state
    assert gate_on is False and alarm_on is True
    decision, fault, reason = _rows(tmp_path)["c0"]  # the amending row stands
    assert (decision, fault) == ("reject", "gpio_error") and "pulse thread crashed" in reason


def test_an_unusable_trigger_time_is_stamped_and_rejected(bundle: Path, tmp_path: Path) -> None:
    """Reject wiring, every container decided accept. A trigger time that is NaN, or of
    another clock (wall time instead of monotonic), gives no gate time: such a container
    must still be ejected at a gate derived from its arrival, and on record; the next one
    is untouched."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio={"energise_to": "reject"})
    f = MockFactory()
    ejector = f.pin(cfg.gpio.ejector_pin)
    fired = {}
    with line_runtime(cfg, f) as rt:
        for cid, stamp in (("c0", lambda: float("nan")), ("c1", time.time), ("c2", time.monotonic)):
            ejector.clear_states()
            rt.submit(Job(cid, stamp(), _frames()))
            assert rt.drain(10) and rt.io.pulses.wait_idle(3)
            fired[cid] = [s.state for s in ejector.states].count(True)
    assert fired == {"c0": 1, "c1": 1, "c2": 0}
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == rows["c1"][:2] == ("reject", "bad_trigger")
    assert "nan" in rows["c0"][2] and rows["c2"][:2] == ("accept", None)


def test_a_full_collection_at_the_gate_costs_no_release(bundle: Path, tmp_path: Path) -> None:
    """A full garbage-collector pass holds the GIL while it scans; over what a long-lived process
    has built it outlasts the pulse tolerance, and the accept pulse would miss its gate. The
    runtime freezes what existed at startup, so the pass run just before the gate is short."""
    import gc

    ballast = [[i] for i in range(1_500_000)]  # built before startup, like imported modules

    def collect_just_before(gate: float) -> None:  # on the main thread: the pulses must wait
        time.sleep(max(0.0, gate - 0.005 - time.monotonic()))
        gc.collect()

    states = [s.state for s in accept_one(bundle, tmp_path, collect_just_before)]
    del ballast
    assert states == [False, True, False]
    assert _rows(tmp_path)["c0"][:2] == ("accept", None)


def test_a_frame_later_than_its_timeout_rejects_at_the_pins(bundle: Path, tmp_path: Path) -> None:
    """Accept wiring, every container decided accept. The camera's second frame of c0 comes
    late (a read slower than frame_timeout_ms, long before the gate): c0 must never open the
    gate and be on record as camera_drop; c1, read at speed, goes through."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory()
    gate = f.pin(cfg.gpio.ejector_pin)
    late_s = 1.5 * cfg.camera.frame_timeout_ms / 1000

    def slow_second(read: Callable[[], Any]) -> Callable[[], Any]:
        n = [0]

        def slow() -> Any:
            n[0] += 1
            if n[0] == 2:
                time.sleep(late_s)
            return read()

        return slow

    opened = {}
    with line_runtime(cfg, f) as rt:
        other = iter(np.random.default_rng(1).integers(0, 255, (3, 256, 320, 3), dtype=np.uint8))
        c1 = lambda: next(other, None)  # noqa: E731  (not c0's pixels: those would read frozen)
        for cid, read in (("c0", slow_second(_frames())), ("c1", c1)):
            gate.clear_states()
            rt.submit(Job(cid, time.monotonic(), read))
            assert rt.drain(10) and rt.io.pulses.wait_idle(3)
            opened[cid] = [s.state for s in gate.states].count(True)
    assert opened == {"c0": 0, "c1": 1}
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "camera_drop") and "later than" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)


@pytest.mark.parametrize("wiring", ["accept", "reject"])
def test_a_hung_supervisor_passes_nothing_undecided_and_the_alarm_goes_up(
    wiring: str, bundle: Path, tmp_path: Path
) -> None:
    """The supervisor (deadlines, stuck stages, watchdog) hangs in its sd_notify call (a
    full notify socket blocks the send), and while it hangs a camera hangs on a container.
    Nobody finalises that container at its deadline, so the gate must reject it by itself:
    no accept pulse (accept wiring), or the reject pulse armed at the trigger fires
    (reject wiring). The container decided meanwhile passes only on its recorded accept.
    The audit writer sees the supervisor stuck and raises the alarm output; once the
    supervisor is back, the hung container is audited as the stall reject it was."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio={"energise_to": wiring})
    delay, pulse = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    f = MockFactory()
    gate, alarm_pin = f.pin(cfg.gpio.ejector_pin), f.pin(cfg.gpio.alarm_pin)
    hung, release, camera = threading.Event(), threading.Event(), threading.Event()
    seen: list = []
    with line_runtime(cfg, f, on_outcome=seen.append) as rt:

        def notify(message: str) -> bool:  # the supervisor's own call blocks
            hung.set()
            release.wait(30)
            return True

        rt.watchdog.notify = notify
        assert _wait_for(hung.is_set, 5)  # the supervisor is stuck from here
        t0 = time.monotonic()
        gate.clear_states()
        edges = {"decided": t0}
        rt.submit(Job("decided", t0, _frames()))
        time.sleep(0.3)  # the two gate times well apart
        edges["hung"] = time.monotonic()
        rt.submit(Job("hung", edges["hung"], lambda: camera.wait(30) and None))
        # The audit stage alarms once the supervisor has missed its beat (the gate delay).
        assert _wait_for(lambda: alarm_pin.state, delay + 5)
        assert _wait_for(lambda: time.monotonic() > edges["hung"] + delay + pulse + 0.2)
        on = pin_intervals(gate, t0)  # the gate's history while the supervisor still hangs
        reasons = rt.alarm_reasons
        assert rt.holding("capture") == "hung"  # no one decided it
        release.set()  # the supervisor returns: it finalises the hung container
        assert _wait_for(lambda: any(o.container_id == "hung" for o in seen))
        camera.set()
        assert rt.drain(10) and rt.io.pulses.wait_idle(3)
    assert reasons == ["stage supervisor is stuck (no heartbeat)"]
    cs = gated(edges, on, delay, pulse, wiring)
    decided, stuck = cs["decided"], cs["hung"]
    assert not stuck.passed  # physically rejected with no one deciding it
    rows = _rows(tmp_path)
    assert rows["hung"][:2] == ("reject", "stall")
    # The decided container passed exactly when its accept was recorded (in time).
    assert decided.passed == (rows["decided"][0] == "accept")


def test_a_stage_not_yet_started_is_not_stuck_and_one_that_ended_is() -> None:
    """The audit stage checks the supervisor from its first step, which can come before the
    supervisor's thread starts: not started must not read as stuck (a false alarm at every
    start). A stage that ended (crashed, stays down) is stuck."""
    clock = {"t": 0.0}
    s = Stage("supervisor", lambda: None, lambda st, e: False, lambda: clock["t"])
    clock["t"] = 100.0
    assert not s.stale(clock["t"], 1.0)
    s.stop()
    s.start()
    assert s.join(2) and s.stale(clock["t"], 1.0)
