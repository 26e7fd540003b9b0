"""The runtime on real parts (ONNX Runtime, SQLite, MockFactory): every fault class ends in an
audited reject; pulses land at trigger + delay; metrics bind to 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import json
import random
import socket
import sqlite3
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.audit import verify
from edge.config import ConfigError, LineConfig, load_config, parse_config
from edge.gpio import LineIO
from edge.runtime import Job
from edge.simulate import FaultyBackend
from fod.cli import main

from .test_export import exported  # noqa: F401


@pytest.fixture(scope="module")
def bundle(exported, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(["bundle", "--onnx", str(exported[3]), "--out", str(out)]) == 0
    return out


def _cfg(bundle: Path, tmp: Path, **over) -> LineConfig:
    base = LineConfig()
    cfg = dataclasses.replace(
        base,
        camera=dataclasses.replace(base.camera, frames=3),
        model=dataclasses.replace(base.model, bundle=str(bundle)),
        gpio=dataclasses.replace(base.gpio, delay_ms=400, pulse_ms=20, alarm_faults=3),
        audit=dataclasses.replace(base.audit, folder=tmp / "audit", min_free_bytes=0),
        metrics=dataclasses.replace(base.metrics, port=0),
    )
    for section, values in over.items():
        cfg = dataclasses.replace(
            cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)}
        )
    return cfg


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
    cfg = _cfg(bundle, tmp_path)
    calls = {"n": 0}

    def wrap(be):
        class Sometimes:
            def infer(self, images):
                calls["n"] += 1
                if calls["n"] == 4:  # the 2nd container's first frame (3 frames each)
                    raise RuntimeError("injected")
                if calls["n"] == 7:  # the 3rd: stall past the decision deadline
                    time.sleep(0.5)
                return be.infer(images)

        return Sometimes()

    with line_runtime(cfg, MockFactory(), wrap) as rt:
        t = time.monotonic()
        rt.submit(Job("ok", t, _frames()))
        rt.drain(10)
        rt.submit(Job("backend", time.monotonic(), _frames()))
        rt.drain(10)
        rt.submit(Job("late", time.monotonic(), _frames()))
        rt.drain(10)
        rt.submit(Job("drop", time.monotonic(), _frames(n=1)))
        rt.submit(Job("corrupt", time.monotonic(), _frames(shape=(256, 320, 4))))
        rt.submit(Job("camera_raises", time.monotonic(), lambda: 1 / 0))
        rt.submit(Job("grey", time.monotonic(), _frames(shape=(256, 320))))  # mono camera: fine
        assert rt.drain(10)
        assert rt.alarm  # >= 3 faults within the window
        outcomes = {o.container_id: o for o in rt.outcomes}
    rows = _rows(tmp_path)
    expect = {
        "backend": "backend_error",
        "late": "late",
        "drop": "camera_drop",
        "corrupt": "corrupt_frame",
        "camera_raises": "camera_drop",
    }
    for cid, fault in expect.items():
        assert outcomes[cid].reject and outcomes[cid].fault == fault
        assert rows[cid][0] == "reject" and rows[cid][1] == fault and rows[cid][2]
    assert rows["ok"][1] is None and rows["grey"][1] is None
    assert verify(tmp_path / "audit").rows == 7
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
    slow = lambda be: FaultyBackend(be, {"slow": 1.0}, 0.2, random.Random(0))  # noqa: E731
    with line_runtime(cfg, MockFactory(), slow) as rt:
        for i in range(6):
            rt.submit(Job(f"c{i}", time.monotonic(), _frames()))
        assert rt.drain(30)
        faults = [o.fault for o in rt.outcomes]
    assert "queue_overflow" in faults
    assert all(o.reject for o in rt.outcomes if o.fault)
    assert len(_rows(tmp_path)) == 6  # every container audited, none dropped


def test_audit_unavailable_rejects_everything(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path)
    cfg = dataclasses.replace(cfg, audit=dataclasses.replace(cfg.audit, min_free_bytes=2**62))
    with line_runtime(cfg, MockFactory()) as rt:
        for i in range(3):  # one at a time: none of them late
            rt.submit(Job(f"c{i}", time.monotonic(), _frames()))
            assert rt.drain(10)
        assert all(o.reject and o.fault == "audit_unavailable" for o in rt.outcomes)
        assert rt.alarm


def test_gpio_error_counted(bundle: Path, tmp_path: Path, monkeypatch) -> None:
    def broken(self, trigger_t, reject):
        raise OSError("pin gone")

    monkeypatch.setattr(LineIO, "act", broken)
    with line_runtime(_cfg(bundle, tmp_path), MockFactory()) as rt:
        rt.submit(Job("c0", time.monotonic(), _frames()))
        assert rt.drain(10)
        assert rt.outcomes[0].fault == "gpio_error"


def test_reject_pulse_lands_at_trigger_plus_delay(bundle: Path, tmp_path: Path) -> None:
    f = MockFactory()
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 0.0})  # every container rejects
    with line_runtime(cfg, f) as rt:
        pin = f.pin(cfg.gpio.ejector_pin)
        pin.clear_states()
        t0 = time.monotonic()
        rt.submit(Job("c0", t0, _frames()))
        assert rt.drain(10)
        assert rt.io.pulses.wait_idle(2)
        states = pin.states
    assert [s.state for s in states] == [False, True, False]  # one pulse, nothing else
    assert abs(states[1].timestamp - 0.400) < 0.03  # delta since clear_states, just before t0
    assert abs(states[2].timestamp - 0.020) < 0.03


def test_metrics_bind_to_loopback_only(bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = _cfg(bundle, tmp_path, metrics={"port": port})
    with line_runtime(cfg, MockFactory()) as rt:
        assert rt.metrics.address[0] == "127.0.0.1"
        rt.submit(Job("c0", time.monotonic(), _frames()))
        rt.drain(10)
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "fod_containers_total" in text and "fod_stage_seconds_bucket" in text


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "line.toml"
    p.write_text("[gpio]\ndelay_ms = 'soon'\n")
    with pytest.raises(ConfigError, match=r"line\.toml: gpio\.delay_ms must be a number"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown key camera\.fps"):
        parse_config({"camera": {"fps": 30}}, "x.toml")
    with pytest.raises(ConfigError, match="unknown section"):
        parse_config({"cameras": {}}, "x.toml")
    with pytest.raises(ConfigError, match=r"decision_margin_ms must be below gpio\.delay_ms"):
        parse_config({"gpio": {"delay_ms": 50.0}}, "x.toml")
    example = Path(__file__).resolve().parent.parent / "edge" / "line.example.toml"
    assert load_config(example) == LineConfig()  # the commented example is the defaults


def test_fod_simulate_end_to_end(bundle: Path, tmp_path: Path, small_set: Path, capsys) -> None:
    out = tmp_path / "sim"
    rc = main(
        [
            "simulate",
            "--bundle",
            str(bundle),
            "--sequences",
            str(small_set),
            "--containers",
            "4",
            "--rate",
            "240",
            "--out",
            str(out),
            "--faults",
            "camera_drop=1.0",
            "--json",
        ]
    )
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert s["containers"] == 4 and s["rejected"] == 4 and s["faults"] == {"camera_drop": 4}
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
        "[gpio]\ndelay_ms = 400.0\n"
    )
    assert (
        main(["run", "--config", str(cfg), "--rate", "240", "--max-containers", "2", "--json"]) == 0
    )
    r = json.loads(capsys.readouterr().out)
    assert r["containers"] == 2
    assert main(["audit", "verify", str(tmp_path / "audit")]) == 0
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

    with line_runtime(_cfg(bundle, tmp_path), MockFactory(), count) as rt:
        rt.submit(Job("old", time.monotonic() - 1.0, _frames()))  # its gate passed a while ago
        assert rt.drain(10)
        o = rt.outcomes[0]
    assert o.reject and o.fault == "late" and "not inferred" in o.reason and calls["n"] == 0


def test_grey_frames_match_their_rgb_copies(exported, small_set: Path) -> None:  # noqa: F811
    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.sources import open_source

    # A mono source hands over GRAY8 frames: the same pixels as the RGB path's channels.
    video = sorted((small_set / "sequences").glob("*.avi"))[0]
    rgb_src, grey_src = open_source(f"file:{video}"), open_source(f"file:{video}", mono=True)
    rgb, grey = rgb_src.read(), grey_src.read()
    rgb_src.close(), grey_src.close()
    assert rgb is not None and grey is not None
    assert (
        grey.ndim == 2 and np.array_equal(grey, rgb[:, :, 0]) and np.array_equal(grey, rgb[:, :, 2])
    )
    # The backend widens grey to three equal planes: bit-identical outputs.
    with OnnxRuntimeBackend(exported[3], threads=1) as be:
        w, h = be.info.input_size
        frames = np.random.default_rng(1).integers(0, 255, (2, h, w), dtype=np.uint8)
        b1, s1 = be.infer(frames)
        b3, s3 = be.infer(np.repeat(frames[..., None], 3, axis=3))
    assert np.array_equal(b1, b3) and np.array_equal(s1, s3)
