"""The reference frames again while the line runs (`edge.self_test.SelfTest`): rounds by
hand, an engine that goes blind mid-shift stopped at the pins, `fod simulate --faults
blind`, and rounds that never pass."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.config import LineConfig
from edge.jobs import Job
from edge.reference import Rule, Sight
from edge.self_test import SelfTest
from fod.cli import main
from fod.line import DEMO_BUNDLE

from .gate_run import rising_edges
from .test_recorder import _wait_for
from .test_reference import REF, _line, _scripted
from .test_runtime import _rows


def test_self_test_rounds_by_hand() -> None:
    """A round is one call per reference image, due `every_s` after the last ended; it
    passes on `needed` of what the maker found, is blind under it, and a call that raises
    ends it unjudged."""
    now = [100.0]
    st = SelfTest(Sight("at start", REF, Rule(3, "maker")), 10.0, lambda: now[0])
    assert st.need == 2 and not st.due()
    now[0] = 110.0
    hit, miss = [[15, 10, 25, 20, 0.9]], [[15, 10, 25, 20, 0.4]]

    def one(rows):  # detect() of one image, answering `rows`
        return lambda image: _scripted([rows])([image])[0]

    assert st.due() and st.step(one(hit)) is None  # image 0 (2 objects): one found
    assert st.step(one([[5, 5, 9, 9, 0.5]])) is True  # image 1: found, 2 of 3
    assert st.rounds["passed"] == 1 and not st.due() and st.line.startswith("found 2 of 3")
    now[0] = 120.0
    assert st.step(one(hit)) is None and st.step(one(miss)) is False  # 1 of 3: blind
    assert st.rounds["blind"] == 1 and st.line.startswith("found 1 of 3")
    now[0] = 130.0

    def broken(image):
        raise RuntimeError("engine lost")

    assert st.step(one(hit)) is None
    with pytest.raises(RuntimeError):
        st.step(broken)
    assert st.rounds["error"] == 1 and not st.due()
    now[0] = 140.0  # a fresh round: the object found before the error does not count
    assert st.step(one(miss)) is None and st.step(one(miss)) is False
    assert st.line.startswith("found 0 of 3")
    # No round passed since 110: past 2 periods + REFERENCE_GRACE_S (50 s) it is overdue.
    assert st.overdue() is None
    now[0] = 161.0
    assert st.overdue() == pytest.approx(51.0)


def _quiet_frames(seed: int, n: int = 3):
    """Grey frames of sensor noise about mid-grey: nothing the demo model scores 0.4."""
    rng = np.random.default_rng(seed)
    frames = [
        np.clip(128 + rng.normal(0, 8, (384, 640)), 0, 255).astype(np.uint8) for _ in range(n)
    ]
    it = iter(frames)
    return lambda: next(it, None)


def _running_line(bundle: Path, tmp_path: Path, every_s: float) -> LineConfig:
    """A line on `bundle` with mock pins (alarm on GPIO6), 3 frames a container, a 4 s
    gate, the reference frames again every `every_s`."""
    base = _line(bundle)
    return dataclasses.replace(
        base,
        camera=dataclasses.replace(base.camera, frames=3),
        model=dataclasses.replace(base.model, reference_every_s=every_s),
        gpio=dataclasses.replace(
            base.gpio, pin_factory="mock", delay_ms=4000, pulse_ms=20, alarm_pin="GPIO6"
        ),
        audit=dataclasses.replace(base.audit, folder=tmp_path / "audit", min_free_bytes=0),
        metrics=dataclasses.replace(base.metrics, port=0),
    )


@pytest.mark.parametrize(
    "every_s, dimmed",
    [(0.3, slice(None)), (0.3, 2), (0.0, slice(None))],
    ids=["self-test", "self-test-one-class", "start-only"],
)
def test_an_engine_that_goes_blind_mid_shift_stops_the_line(
    ref_bundle, tmp_path: Path, every_s: float, dimmed
) -> None:
    """Through the runtime (the demo's INT8-CPU model on ONNX Runtime, MockFactory pins):
    the engine passes its start-up check and a self-test round, accepts c0, passes another
    round, then goes blind (the scores of every class, or of glass flakes alone, a fifth:
    outputs no per-frame check can tell from a clean frame). c1, decided blind before the
    next round, is accepted - the exposure a round's period bounds - and named in the
    alarm for re-inspection; the round that follows stops the line: c2 gets no pulse, is
    audited `blind_model`, the alarm pin is up and the runtime has failed. Blind to flakes
    alone, the engine still finds enough of the reference objects in all (5 of 9, 5
    needed: another class's detection on a flake counts there); the round fails on the
    flakes found as flakes. Checked at start only (every_s 0), c2 is pulsed through like
    c0."""
    cfg = _running_line(ref_bundle, tmp_path, every_s)
    blind = threading.Event()

    def wrap(be):
        class Engine:
            def infer(self, images):
                boxes, scores = be.infer(images)
                if blind.is_set():
                    scores = scores.copy()
                    scores[:, :, dimmed] *= np.float32(0.2)
                return boxes, scores

        return Engine()

    f = MockFactory()
    with line_runtime(cfg, f, wrap, lambda o: None) as rt:
        gate, alarm = f.pin(cfg.gpio.ejector_pin), f.pin("GPIO6")
        gate.clear_states()
        if every_s:
            assert _wait_for(lambda: rt.self_test.rounds["passed"] >= 1, 20)
        rt.submit(Job("c0", time.monotonic(), _quiet_frames(0)))
        assert rt.drain(20)
        if every_s:  # a round after c0 vouches for it
            assert _wait_for(lambda: rt.self_test.rounds["passed"] >= 2, 20)
        blind.set()
        rt.submit(Job("c1", time.monotonic(), _quiet_frames(1)))
        assert rt.drain(20)
        if every_s:
            assert _wait_for(lambda: rt.blind is not None, 20)
        else:
            time.sleep(1.5)  # as long as a round would take here
        rt.submit(Job("c2", time.monotonic(), _quiet_frames(2)))
        assert rt.drain(20)
        assert rt.io.pulses.wait_idle(15)
        pulses = rising_edges(gate)
        alarm_up, failed, reasons = alarm.state, rt.failed, rt.alarm_reasons
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("accept", None) and rows["c1"][:2] == ("accept", None)
    if not every_s:
        assert rows["c2"][:2] == ("accept", None) and pulses == 3 and not alarm_up
        return
    assert rows["c2"][:2] == ("reject", "blind_model")
    why = "found 0 of" if dimmed == slice(None) else "glass_flake 0/2 (>= 1); blind to glass_flake"
    assert "failed its reference frames mid-shift: " in rows["c2"][2] and why in rows["c2"][2]
    if dimmed != slice(None):  # enough in all: the flakes' own count is what failed
        got, need = re.search(r"found (\d+) of .* at least (\d+) needed", rows["c2"][2]).groups()
        assert int(got) >= int(need)
    assert pulses == 2 and alarm_up  # c0's and c1's pulses; none for c2
    assert failed is not None and "mid-shift" in failed
    assert "1 container(s) accepted since the last passed check (c1)" in reasons[0]
    # On record beside the rows, after c1's (seq 2), on a chain `fod audit verify` checks.
    lines = (tmp_path / "audit" / "events.jsonl").read_text().split("\n")[:-1]
    events = [e for e in map(json.loads, lines) if e["kind"] != "start"]  # after the run's `start`
    assert [(e["kind"], e["audit_seq"]) for e in events][:1] == [("alarm", 2)]
    assert events[0]["detail"] == reasons[0] and "hold them for re-inspection" in reasons[0]
    assert main(["audit", "verify", str(tmp_path / "audit")]) == 0


def test_fod_simulate_blind_fault_is_caught_by_the_reference_rounds(
    small_set: Path, tmp_path: Path, capsys
) -> None:
    """`--faults blind=1.0`: the demo's engine blind from the first container on (its
    start-up check runs before the fault can strike). The first round stops the line;
    what it accepted before is named in the alarm, what came after is rejected
    `blind_model`, and the gate agrees with the audit."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    cfg = tmp_path / "line.toml"
    cfg.write_text("[model]\nreference_every_s = 0.3\n")
    argv = ["simulate", "--sequences", str(small_set), "--containers", "8", "--rate", "20"]
    argv += ["--frames", "3", "--config", str(cfg), "--out", str(tmp_path / "sim")]
    # A round is 8 model calls, each in a moment the inference stage is idle. At 20/min
    # and `fod simulate`'s own 3 s gate the stage stays idle most of each gap even on a
    # CPU without VNNI that another process shares (float kernels, 0.3 s a call there):
    # at 60/min such a CPU left it no idle moment, and no round ended before the last
    # container.
    argv += ["--delay-ms", "3000"]
    assert main([*argv, "--faults", "blind=1.0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["injected"] == {"blind": 1} and s["reference_rounds"]["blind"] == 1
    assert "failed its reference frames mid-shift" in s["failed"] and s["alarms"] == 1
    assert s["faults"]["blind_model"] >= 1 and s["violations"] == []
    held = int(re.search(r"; (\d+) container\(s\) accepted since", s["alarm_reasons"][0])[1])
    # Blind scores (a fifth) start no track: every container is named or a fault reject.
    assert held + s["fault_rejects"] == s["containers"]
    assert s["physically_passed"] <= held  # every container through the gate is named


def test_rounds_that_never_pass_raise_the_alarm(ref_bundle, tmp_path: Path, monkeypatch) -> None:
    """Every reference frame's model call raises (the containers' own calls run): no
    round passes, and past 2 periods + REFERENCE_GRACE_S the alarm pin goes up while the
    line goes on deciding (c0 before, c1 after: both accepted, both pulsed)."""
    monkeypatch.setattr("edge.self_test.REFERENCE_GRACE_S", 0.5)
    cfg = _running_line(ref_bundle, tmp_path, 0.2)
    runtime: list = []

    def wrap(be):
        class Engine:
            def infer(self, images):
                if runtime and runtime[0].holding("inference") is None:  # a reference frame
                    raise RuntimeError("engine error on the reference frames only")
                return be.infer(images)

        return Engine()

    f = MockFactory()
    with line_runtime(cfg, f, wrap, lambda o: None) as rt:
        runtime.append(rt)
        gate, alarm = f.pin(cfg.gpio.ejector_pin), f.pin("GPIO6")
        gate.clear_states()
        rt.submit(Job("c0", time.monotonic(), _quiet_frames(0)))
        assert rt.drain(20)
        assert _wait_for(lambda: alarm.state, 20)
        rt.submit(Job("c1", time.monotonic(), _quiet_frames(1)))
        assert rt.drain(20)
        assert rt.io.pulses.wait_idle(15)
        pulses = rising_edges(gate)
        failed, reasons, rounds = rt.failed, rt.alarm_reasons, dict(rt.self_test.rounds)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("accept", None) and rows["c1"][:2] == ("accept", None)
    assert pulses == 2 and failed is None
    assert rounds["error"] >= 1 and not rounds.get("passed")
    assert "no round of the reference frames has passed for" in reasons[0]
