"""The runtime on real parts (ONNX Runtime, SQLite, MockFactory): every fault class ends in an
audited reject; pulses land at trigger + delay; metrics bind to 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.audit_verify import iter_rows, verify
from edge.config import LineConfig
from edge.errors import FodError
from edge.events import EVENTS
from edge.outputs_record import read_record
from edge.runtime import Job
from edge.software import code_digest
from edge.timeline import tick_step
from fod.cli import main

from .conftest import free_port


def _cfg(bundle: Path, tmp: Path, **over) -> LineConfig:
    base = LineConfig()
    cfg = dataclasses.replace(
        base,
        camera=dataclasses.replace(base.camera, frames=3, width=320, height=256),
        model=dataclasses.replace(base.model, bundle=str(bundle), allow_unsigned=True),
        gpio=dataclasses.replace(
            base.gpio, pin_factory="mock", delay_ms=1500, pulse_ms=20, alarm_faults=3
        ),
        timing=dataclasses.replace(base.timing, queue_depth=8),
        audit=dataclasses.replace(base.audit, folder=tmp / "audit", min_free_bytes=0),
        metrics=dataclasses.replace(base.metrics, port=0),
    )
    for section, values in over.items():
        cfg = dataclasses.replace(
            cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)}
        )
    return cfg


def _refused_at_start(cfg: LineConfig, match: str) -> None:
    """`fod run`'s start refuses cfg (FodError matching `match`) before any pin is claimed
    (every gpiozero device asks the factory for its pin), the audit opened or the bundle
    recorded as run."""
    factory = MockFactory()
    claimed: list = []
    make = factory.pin
    factory.pin = lambda spec, **kw: claimed.append(spec) or make(spec, **kw)  # type: ignore[method-assign]
    with pytest.raises(FodError, match=match), line_runtime(cfg, factory, None, lambda o: None):
        pass
    assert claimed == []  # no output device was made on any pin
    assert not cfg.audit.folder.exists()


def _frames(n=3, shape=(256, 320, 3)):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, shape, dtype=np.uint8) for _ in range(n)]
    it = iter(frames)
    return lambda: next(it, None)


def _rows(tmp: Path):
    db = sqlite3.connect(str(sorted((tmp / "audit").glob("audit-*.db"))[-1]))
    rows = db.execute(
        "SELECT container_id, decision, fault, reason FROM containers ORDER BY seq"
    ).fetchall()
    db.close()
    return {r[0]: r[1:] for r in rows}


def test_every_fault_class_rejects_and_is_audited(bundle: Path, tmp_path: Path) -> None:
    # A long gate delay leaves a loaded machine time for the good container; the stall
    # lasts until the supervisor has rejected it, however long that takes.
    cfg = _cfg(bundle, tmp_path, gpio={"delay_ms": 3000.0})
    calls = {"n": 0}
    rejected_late = threading.Event()

    def wrap(be):
        class Sometimes:
            def infer(self, images):
                calls["n"] += 1
                if calls["n"] == 4:  # the 2nd container's first frame (3 frames each)
                    raise RuntimeError("injected")
                if calls["n"] == 7:  # the 3rd: stall past the decision deadline
                    rejected_late.wait(30)
                return be.infer(images)

        return Sometimes()

    seen = []

    def record(o) -> None:
        seen.append(o)
        if o.container_id == "late":
            rejected_late.set()

    with line_runtime(cfg, MockFactory(), wrap, record) as rt:
        t = time.monotonic()
        rt.submit(Job("ok", t, _frames()))
        rt.drain(10)
        rt.submit(Job("backend", time.monotonic(), _frames()))
        rt.drain(10)
        rt.submit(Job("late", time.monotonic(), _frames()))
        rt.drain(10)
        for cid, read in (
            ("drop", _frames(n=1)),
            ("corrupt", _frames(shape=(256, 320, 4))),
            ("camera_raises", lambda: 1 / 0),
            ("grey", _frames(shape=(256, 320))),  # not this camera's geometry
            ("half", _frames(shape=(128, 320, 3))),  # truncated
        ):
            rt.submit(Job(cid, time.monotonic(), read))
            assert rt.drain(10)
        assert rt.alarm  # >= 3 faults within the window
        outcomes = {o.container_id: o for o in seen}
    rows = _rows(tmp_path)
    expect = {
        "backend": "backend_error",
        "late": "stall",  # the supervisor rejected it at its deadline, mid-inference
        "drop": "camera_drop",
        "corrupt": "corrupt_frame",
        "camera_raises": "camera_drop",
        "grey": "corrupt_frame",
        "half": "corrupt_frame",
    }
    for cid, fault in expect.items():
        assert outcomes[cid].reject and outcomes[cid].fault == fault
        assert rows[cid][0] == "reject" and rows[cid][1] == fault and rows[cid][2]
    assert rows["ok"][1] is None
    assert verify(tmp_path / "audit").rows == 8
    # A reject by decision keeps its evidence frame; a fault reject has none to keep.
    db = sqlite3.connect(tmp_path / "audit" / "audit-000001.db")
    images = dict(db.execute("SELECT container_id, image FROM containers").fetchall())
    db.close()
    assert outcomes["ok"].reject and outcomes["ok"].fault is None  # the lively test model
    saved = tmp_path / "audit" / images["ok"]
    assert saved.is_file() and cv2.imread(str(saved)).shape[:2] == (256, 320)
    assert images["drop"] is None and images["backend"] is None


def test_queue_overflow_rejects(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, timing={"queue_depth": 1})

    def slow(be):
        class Slow:
            def infer(self, images):
                time.sleep(0.2)
                return be.infer(images)

        return Slow()

    seen = []
    with line_runtime(cfg, MockFactory(), slow, seen.append) as rt:
        for i in range(6):
            rt.submit(Job(f"c{i}", time.monotonic(), _frames()))
        assert rt.drain(30)
        faults = [o.fault for o in seen]
    assert "queue_overflow" in faults
    assert all(o.reject for o in seen if o.fault)
    assert len(_rows(tmp_path)) == 6  # every container audited, none dropped


def test_audit_unavailable_rejects_everything(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path)
    cfg = dataclasses.replace(cfg, audit=dataclasses.replace(cfg.audit, min_free_bytes=2**62))
    cfg = dataclasses.replace(cfg, decision=dataclasses.replace(cfg.decision, min_evidence=99.0))
    f, seen = MockFactory(), []
    with line_runtime(cfg, f, on_outcome=seen.append) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        for i in range(3):  # one at a time: none of them late; each would be an accept
            rt.submit(Job(f"c{i}", time.monotonic(), _frames()))
            assert rt.drain(10)
        assert all(o.reject and o.fault == "audit_unavailable" for o in seen)
        assert rt.alarm
        assert rt.io.pulses.wait_idle(5)  # every pulse due has fired
        states = gate.states
    assert len(states) == 1 and not states[0].state  # no accept pulse ever: all rejected


def test_gate_output_error_is_amended_and_the_container_rejected(
    bundle: Path, tmp_path: Path
) -> None:
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})  # every container accepts
    f, seen = MockFactory(), []
    with line_runtime(cfg, f, on_outcome=seen.append) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)

        def broken(value):  # the pin driver fails when the accept pulse is due
            raise OSError("pin gone")

        pin._set_state = broken
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)  # every pulse due has fired
        assert rt.drain(10)
    assert (rt.counts["accept"], rt.counts["reject"]) == (0, 1)  # the books follow the gate
    assert [(o.reject, o.fault, o.amends) for o in seen] == [
        (False, None, False),
        (True, "gpio_error", True),
    ]
    db = sqlite3.connect(str(tmp_path / "audit" / "audit-000001.db"))
    rows = db.execute("SELECT decision, fault FROM containers ORDER BY seq").fetchall()
    db.close()
    assert rows == [("accept", None), ("reject", "gpio_error")]  # the last word is physical


def accept_one(bundle: Path, tmp: Path, before_gate: Optional[Callable[[float], None]] = None):
    """One container through a runtime whose decision accepts everything; `before_gate` gets
    the gate time once it is decided. Returns the gate pin's history (MockPin states)."""
    f = MockFactory()
    cfg = _cfg(bundle, tmp, decision={"min_evidence": 99.0})
    with line_runtime(cfg, f) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic()
        rt.submit(Job("c0", t0, _frames()))
        assert rt.drain(10)
        if before_gate is not None:
            before_gate(t0 + cfg.gpio.delay_ms / 1000)
        assert rt.io.pulses.wait_idle(2)
        return list(pin.states)


def test_accept_pulse_lands_at_trigger_plus_delay(bundle: Path, tmp_path: Path) -> None:
    states = accept_one(bundle, tmp_path)
    assert len(states) == 3 and [s.state for s in states] == [False, True, False]
    assert abs(states[1].timestamp - 1.500) < 0.03  # delta since clear_states, just before t0
    assert abs(states[2].timestamp - 0.020) < 0.03


def test_a_rejected_container_gets_no_pulse(bundle: Path, tmp_path: Path) -> None:
    f = MockFactory()
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 0.0})  # every container rejects
    with line_runtime(cfg, f) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(5)  # every pulse due has fired
        states = pin.states
    assert len(states) == 1 and not states[0].state


def test_metrics_bind_to_loopback_only(bundle: Path, tmp_path: Path) -> None:
    port = free_port()
    cfg = _cfg(bundle, tmp_path, metrics={"port": port})
    with line_runtime(cfg, MockFactory()) as rt:
        assert rt.metrics.address[0] == "127.0.0.1"
        rt.submit(Job("c0", time.monotonic(), _frames()))
        rt.drain(10)
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "fod_containers_total" in text and "fod_stage_seconds_bucket" in text


def test_fod_health_sees_the_supervisor_hang(bundle: Path, tmp_path: Path, capsys) -> None:
    """The real runtime serving its metrics: healthy while its supervisor goes round; with
    the supervisor thread blocked (inside its round, where it sets the beat), the endpoint
    still answers with the alarm down, and `fod health` says unhealthy. (A gate delay of
    5 s: the audit writer alarms on a supervisor stuck that long, after this check.)"""
    port = free_port()
    cfg = _cfg(bundle, tmp_path, metrics={"port": port}, gpio={"delay_ms": 5000.0})
    toml = tmp_path / "line.toml"
    toml.write_text(f"[metrics]\nport = {port}\n")
    health = ["health", "--config", str(toml), "--timeout", "2", "--max-age", "1"]
    release = threading.Event()
    with line_runtime(cfg, MockFactory()) as rt:
        deadline = time.monotonic() + 10
        while main(health) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the first round after start
        assert main(health) == 0
        beat = rt.metrics.heartbeat
        beat_now = beat.set_to_current_time
        beat.set_to_current_time = lambda: release.wait() and beat_now()  # the next round
        time.sleep(1.5)
        capsys.readouterr()
        assert main(health) == 1
        assert "supervisor last went round" in capsys.readouterr().err
        assert not rt.alarm  # the heartbeat alone said it
        release.set()
        beat.set_to_current_time = beat_now


def test_fod_simulate_end_to_end(bundle: Path, tmp_path: Path, small_set: Path, capsys) -> None:
    out = tmp_path / "sim"
    argv = ["simulate", "--bundle", str(bundle), "--sequences", str(small_set), "--frames", "5"]
    argv += ["--containers", "4", "--rate", "240", "--out", str(out), "--faults", "camera_drop=1.0"]
    assert main([*argv, "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["containers"] == 4 and s["physically_passed"] == 0
    assert s["rate_per_min"] == 240 and s["rate_from_frame_ms"] is None  # as given, not timed
    assert s["faults"] == {"camera_drop": 4} and s["audit_disagrees"] == 0
    assert (out / "timeline.png").stat().st_size > 0
    assert main(["audit", "verify", str(out / "audit")]) == 0


def test_fod_run_with_video_camera_and_timer(
    bundle: Path, tmp_path: Path, small_set: Path, capsys
) -> None:
    video = sorted((small_set / "sequences").glob("*.avi"))[0]
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{video}"\nframes = 2\n[model]\nbundle = "{bundle}"\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\nmin_free_bytes = 0\n[metrics]\nport = 0\n'
        '[gpio]\ndelay_ms = 2000.0\npin_factory = "mock"\n'
    )
    argv = ["run", "--config", str(cfg), "--rate", "240", "--max-containers", "2", "--json"]
    assert main(argv) == 2  # mock pins drive nothing: refused unless asked for
    assert "--allow-mock-pins" in capsys.readouterr().err
    assert main([*argv, "--allow-mock-pins"]) == 2  # an unsigned bundle is refused too
    assert "model.public_key is not set" in capsys.readouterr().err
    text = cfg.read_text().replace(
        f'bundle = "{bundle}"', f'bundle = "{bundle}"\nallow_unsigned = true'
    )
    cfg.write_text(text)
    record = tmp_path / "state" / "driven-outputs.json"
    rc = main([*argv, "--allow-mock-pins", "--outputs-record", str(record)])
    r = json.loads(capsys.readouterr().out)
    assert r["containers"] == 2 and rc == (3 if r["alarm"] else 0)
    rec = read_record(record)  # the outputs it drove, for `fod safe-outputs`
    assert rec is not None and (rec.pin_factory, rec.ejector_pin) == ("mock", "GPIO17")
    assert rec.alarm_pin == "GPIO27" and rec.config == str(cfg) and rec.pid == os.getpid()
    assert main(["audit", "verify", str(tmp_path / "audit")]) == 0
    # A restart counts from 1 again: its container ids still name one container each.
    assert main([*argv, "--allow-mock-pins"]) in (0, 3)
    capsys.readouterr()
    rows = [r for r in iter_rows(tmp_path / "audit") if "_chain" not in r]
    assert [r["container_id"] for r in rows] == ["r1-000001", "r1-000002", "r3-000001", "r3-000002"]
    # Each run on record before its rows: the software, model and config that decided them.
    lines = (tmp_path / "audit" / EVENTS).read_text().splitlines()
    starts = [e for e in map(json.loads, lines) if e["kind"] == "start"]
    assert [e["audit_seq"] for e in starts] == [0, 2]
    for e in [x["detail"] for x in starts]:
        assert e["software"]["onnxruntime"] == ort.__version__ and e["software"]["pharma-fod"]
        assert e["edge_code_sha256"] == code_digest() and e["pins"] == "MockFactory"
        assert e["model_sha256"] == rows[0]["model_hash"]
        assert e["config_sha256"] == rows[0]["config_hash"]
        assert e["backend"].startswith("onnxruntime m.onnx, float32 kernels, CPU")
    assert main(["audit", "verify", str(tmp_path / "audit")]) == 0
    assert "2 start)" in capsys.readouterr().out
    cfg.write_text('[camera]\nsource = "sim"\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "fod simulate" in capsys.readouterr().err


def test_expired_container_is_rejected_without_inference(bundle: Path, tmp_path: Path) -> None:
    calls = {"n": 0}

    def count(be):
        class Counting:
            def infer(self, images):
                calls["n"] += 1
                return be.infer(images)

        return Counting()

    seen = []
    with line_runtime(_cfg(bundle, tmp_path), MockFactory(), count, seen.append) as rt:
        rt.submit(Job("old", time.monotonic() - 3.0, _frames()))  # its gate passed a while ago
        assert rt.drain(10)
    (o,) = seen
    assert o.reject and o.fault in ("late", "stall") and calls["n"] == 0


def test_timeline_ticks_never_overprint() -> None:
    assert tick_step(200.0) == 1  # a 5 s run: a tick per second
    assert tick_step(1040 / 200) == 10  # 100 containers at 30/min: every 10 s, 52 px apart
    assert all(tick_step(px) * px >= 40 for px in (0.05, 0.3, 3.0, 33.0))
