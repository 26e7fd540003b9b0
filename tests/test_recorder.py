"""The audit stage (edge.recorder) under faults, judged by the pins: a write that raises
something unforeseen, the stage itself crashing before or after the commit, its queue full
behind a hung writer. Every container is decided accept (min_evidence 99), so only a
fault can reject it."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.jobs import Outcome
from edge.runtime import Job
from edge.simulate import pin_intervals

from .gate_run import gated
from .test_runtime import _cfg, _frames, _rows


def test_an_unexpected_audit_error_rejects_on_record(bundle: Path, tmp_path: Path) -> None:
    """Accept wiring, every container decided accept. The first INSERT raises something the
    audit did not foresee (a bug below it, not an SQLite error): the container must not be
    released, its reject must reach the record, and the runtime must carry on."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory()
    accept = f.pin(cfg.gpio.ejector_pin)
    with line_runtime(cfg, f) as rt:
        insert, calls = rt.audit._insert, {"n": 0}

        def broken(*a):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("a bug below the audit")
            return insert(*a)

        rt.audit._insert = broken  # type: ignore[method-assign]
        accept.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10)  # decided, recorded and finished: nothing left pending
        assert rt.io.pulses.wait_idle(3)
        c0_states = [s.state for s in accept.states]
        accept.clear_states()
        rt.submit(Job("c1", time.monotonic(), _frames()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(3)
        c1_states = [s.state for s in accept.states]
        assert rt.failed is None
    assert c0_states == [False]  # the accept pin never energised: c0 went to the reject path
    assert True in c1_states  # the next container, recorded, is released
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "audit_unavailable")
    assert "RuntimeError: a bug below the audit" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)


@pytest.mark.parametrize("wiring", ["accept", "reject"])
@pytest.mark.parametrize("where", ["row", "release"])
def test_an_audit_stage_crash_rejects_and_finishes_the_container(
    bundle: Path, tmp_path: Path, monkeypatch, wiring: str, where: str
) -> None:
    """Every container decided accept. The audit stage itself crashes on c0 (outside the
    audit log): building its row raises (an accept not on record), or the release after the
    committed row does (an accept on record, never released). The pins must show the
    reject path, the record must end in a reject naming the crash, the alarm must go up,
    and nothing may stay pending."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0}, gpio={"energise_to": wiring})
    f = MockFactory()
    ejector = f.pin(cfg.gpio.ejector_pin)  # accept wiring: energised = released
    calls = {"n": 0}

    def once(real):
        def broken(*a):
            calls["n"] += 1
            if calls["n"] == 1:
                raise ValueError(f"the {where} step broke")
            return real(*a)

        return broken

    if where == "row":
        monkeypatch.setattr(Outcome, "record", once(Outcome.record))
    states = {}
    with line_runtime(cfg, f) as rt:
        if where == "release":
            rt.recorder._release = once(rt.recorder._release)  # type: ignore[method-assign]
        for cid in ("c0", "c1"):
            ejector.clear_states()
            rt.submit(Job(cid, time.monotonic(), _frames()))
            assert rt.drain(10)  # finished: the crash left nothing pending
            assert rt.io.pulses.wait_idle(3)  # past the gate: an armed reject pulse has fired
            states[cid] = True in [s.state for s in ejector.states]
        assert rt.alarm and rt.failed is None
    assert states["c0"] is (wiring == "reject")  # not released / ejected
    assert states["c1"] is (wiring == "accept")  # the restarted stage releases the next
    rows = _rows(tmp_path)  # the last row of a container stands
    assert rows["c0"][:2] == ("reject", "thread_crash")
    assert "audit stage crashed" in rows["c0"][2] and f"the {where} step broke" in rows["c0"][2]
    assert rows["c1"][:2] == ("accept", None)


def test_an_audit_queue_overflow_rejects_and_counts_a_reject(bundle: Path, tmp_path: Path) -> None:
    """Accept wiring, every container decided accept. The audit writer hangs on c0 while
    c1 fills its queue (depth 1 here): c2 finds no room, so it has no record and no release.
    Its gate must stay off, and the runtime's books (outcome hook, counters, metrics) must
    call it the reject it physically is, with the audit fault named."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory()
    gate = f.pin(cfg.gpio.ejector_pin)
    seen: list = []
    go = threading.Event()
    with line_runtime(cfg, f, on_outcome=seen.append) as rt:
        rt.recorder.queue = queue.Queue(1)
        record = rt.audit.record

        def hang_once(*a):
            if not go.is_set():
                go.wait(10)
            return record(*a)

        rt.audit.record = hang_once  # type: ignore[method-assign]
        t0 = time.monotonic()
        gate.clear_states()
        edges = {}
        for cid, ready in (
            ("c0", lambda: rt.holding("audit") == "c0"),
            ("c1", lambda: rt.recorder.queue.full()),
            ("c2", lambda: rt.counts["unaudited"] == 1),
        ):
            edges[cid] = time.monotonic()
            rt.submit(Job(cid, edges[cid], _frames()))
            assert _wait_for(ready), cid
        go.set()
        assert rt.drain(10) and rt.io.pulses.wait_idle(3)
        on = pin_intervals(gate, t0)
    cs = gated(edges, on, cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000, "accept")
    assert not cs["c2"].passed  # no record, no release
    (c2,) = [o for o in seen if o.container_id == "c2"]
    assert c2.reject and c2.fault == "audit_unavailable" and "queue full" in c2.reason
    # The books say what the gate did (c0 and c1 pass unless a slow machine made them late).
    assert sum(c.passed for c in cs.values()) == rt.counts["accept"]
    assert rt.counts["accept"] + rt.counts["reject"] == 3


def _wait_for(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.005)
    return True
