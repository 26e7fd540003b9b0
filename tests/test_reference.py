"""Reference frames: a bundle carries images with known objects, and the unit's backend must
find them before `fod check` passes, `fod run` starts or a rollout switches. A blind engine
(an INT8 calibration gone wrong, a precision bug) gives outputs that pass every health
check and would accept every container."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import List

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import line_runtime
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import open_bundle
from edge.config import CameraConfig, LineConfig, ModelConfig
from edge.errors import FodError
from edge.jobs import Job
from edge.postprocess import Detections
from edge.preflight import FAIL, OK, check_model
from edge.reference import (
    Reference,
    SelfTest,
    Sight,
    check_reference,
    found_objects,
    iou_matrix,
    load_reference,
    needed,
    save_reference,
)
from fod.cli import main
from fod.line import DEMO_BUNDLE

from .gate_run import rising_edges
from .test_runtime import _rows

BOXES = np.float32([[10, 10, 20, 20], [40, 40, 46, 50], [5, 5, 9, 9]])  # [3, 4]
REF = Reference(np.zeros((2, 32, 64), np.uint8), BOXES, np.int64([0, 0, 1]))


def _scripted(per_image: List[List[List[float]]]):
    """detect() answering image i with per_image[i]: rows [x1, y1, x2, y2, score]."""
    calls = iter(per_image)

    def detect(frames) -> List[Detections]:
        rows = np.float32(next(calls)).reshape(-1, 5)
        return [Detections(rows[:, :4], rows[:, 4], np.zeros(len(rows), np.int64))]

    return detect


def test_found_objects_by_hand() -> None:
    assert iou_matrix(BOXES[:1], np.float32([[15, 10, 25, 20]]))[0, 0] == pytest.approx(50 / 150)
    detect = _scripted(
        [
            [[15, 10, 25, 20, 0.9], [40, 40, 46, 50, 0.4]],  # IoU 1/3: found; the 2nd unsure
            [[5, 5, 9, 9, 0.5]],  # exact, at the score: found
        ]
    )
    assert found_objects(detect, REF) == 2
    assert [needed(n) for n in (1, 2, 5, 10, 19)] == [1, 1, 4, 8, 15]
    meta = {"found": 3, "measured_with": "onnxruntime int8_cpu"}
    with pytest.raises(FodError, match=r"blind to its reference frames: found 1 of 3 .* 2 needed"):
        check_reference(_scripted([[[15, 10, 25, 20, 0.9]], []]), REF, meta, (32, 64), "r.npz")
    line = check_reference(
        _scripted([[[15, 10, 25, 20, 0.9]], []]), REF, {"found": 1}, (32, 64), "r"
    )
    assert line.startswith("found 1 of 3 reference objects (1 by the maker")
    with pytest.raises(FodError, match=r"reference frames are \(32, 64\), the model takes"):
        check_reference(_scripted([]), REF, meta, (32, 64, 3), "r.npz")


def test_self_test_rounds_by_hand() -> None:
    """A round is one call per reference image, due `every_s` after the last ended; it
    passes on `needed` of what the maker found, is blind under it, and a call that raises
    ends it unjudged."""
    now = [100.0]
    st = SelfTest(Sight("at start", REF, 3, "maker"), 10.0, lambda: now[0])
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


def test_a_reference_file_that_is_not_one_is_named(tmp_path: Path) -> None:
    path = tmp_path / "reference.npz"
    save_reference(path, REF)
    back = load_reference(path)
    assert np.array_equal(back.boxes, REF.boxes) and back.images.shape == (2, 32, 64)
    path.write_bytes(b"not an npz")
    with pytest.raises(FodError, match=f"{path}: not a reference frame file"):
        load_reference(path)
    for bad, match in [
        (Reference(REF.images.astype(np.float32), BOXES, REF.image_of), "uint8"),
        (Reference(REF.images, BOXES, np.int64([0, 0, 2])), "must index the 2 images"),
        (Reference(REF.images, BOXES * np.nan, REF.image_of), "finite"),
    ]:
        save_reference(path, bad)
        with pytest.raises(FodError, match=match):
            load_reference(path)


@pytest.fixture(scope="module")
def ref_bundle(tmp_path_factory) -> Path:
    """The demo's INT8-CPU model bundled with 4 reference frames of fresh `random` images."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    work = tmp_path_factory.mktemp("ref")
    argv = ["synth", "--out", str(work / "set"), "--images", "8", "--sequences", "0"]
    assert main([*argv, "--size", "640x384", "--seed", "77", "--look", "random"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        model = b.file("int8_cpu")
        argv = ["bundle", "make", "--int8-cpu", str(model), "--out", str(work / "b")]
        assert main([*argv, "--reference", str(work / "set"), "--reference-images", "4"]) == 0
    return work / "b"


def _line(bundle: Path, **camera) -> LineConfig:
    return LineConfig(
        camera=CameraConfig(mono=True, **camera),
        model=ModelConfig(bundle=str(bundle), allow_unsigned=True),
    )


def test_the_bundle_records_what_its_model_found_and_the_unit_finds_it(ref_bundle) -> None:
    meta = json.loads((ref_bundle / "manifest.json").read_text())["reference"]
    assert meta["images"] == 4 and 1 <= meta["found"] <= meta["objects"]
    assert meta["measured_with"].startswith("onnxruntime int8_cpu")
    c = check_model(_line(ref_bundle))
    assert c.status == OK and f"reference objects ({meta['found']} by onnxruntime" in c.detail


@pytest.fixture
def blind_engine(monkeypatch) -> None:
    """The unit's engine miscalibrated: every score a fifth of the model's - finite,
    distinct, in [0, 1], boxes in place: outputs no health check can tell from a frame
    with nothing in it."""
    run = OnnxRuntimeBackend.run

    def dim(self, x):
        boxes, scores = run(self, x)
        return boxes, scores * np.float32(0.2)

    monkeypatch.setattr(OnnxRuntimeBackend, "run", dim)


def test_a_blind_engine_fails_the_check_and_never_runs_the_line(
    ref_bundle, blind_engine, tmp_path: Path, capsys
) -> None:
    cam = tmp_path / "cam"
    cam.mkdir()
    cv2.imwrite(str(cam / "0.png"), np.full((384, 640), 128, np.uint8))
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{cam}"\nmono = true\n'
        f'[model]\nbundle = "{ref_bundle}"\nallow_unsigned = true\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\n'
        '[gpio]\npin_factory = "mock"\ntrigger_pin = "GPIO22"\n'
    )
    run = [
        "run",
        "--config",
        str(cfg),
        "--allow-mock-pins",
        "--rate",
        "60",
        "--max-containers",
        "1",
    ]
    assert main(run) == 2
    assert "blind to its reference frames" in capsys.readouterr().err
    assert not (tmp_path / "audit").exists()  # no container decided, no pin claimed
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    model = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "model")
    assert (
        model["status"] == FAIL and "blind to its reference frames: found 0 of" in model["detail"]
    )


def test_bundle_make_refuses_reference_frames_it_cannot_use(tmp_path: Path, capsys):
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    small = tmp_path / "small"
    argv = ["synth", "--out", str(small), "--images", "6", "--sequences", "0", "--seed", "77"]
    assert main([*argv, "--size", "320x256"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        argv = [
            "bundle",
            "make",
            "--int8-cpu",
            str(b.file("int8_cpu")),
            "--out",
            str(tmp_path / "b"),
        ]
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert ".png: is (256, 320), the model takes frames of (384, 640)" in err
        ann = json.loads((small / "annotations.json").read_text())
        ann["annotations"][0]["bbox"][2] = float("nan")
        (small / "annotations.json").write_text(json.dumps(ann))
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert "annotations.json: annotation" in err and "holds a non-finite number" in err
    assert not (tmp_path / "b").exists()


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


def _until(cond, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.parametrize("every_s", [0.3, 0.0], ids=["self-test", "start-only"])
def test_an_engine_that_goes_blind_mid_shift_stops_the_line(
    ref_bundle, tmp_path: Path, every_s: float
) -> None:
    """Through the runtime (the demo's INT8-CPU model on ONNX Runtime, MockFactory pins):
    the engine passes its start-up check and a self-test round, accepts c0, passes another
    round, then goes blind (every score a fifth: outputs no per-frame check can tell from
    a clean frame). c1, decided blind before the next round, is accepted - the exposure a
    round's period bounds - and named in the alarm for re-inspection; the round that
    follows stops the line: c2 gets no pulse, is audited `blind_model`, the alarm pin is
    up and the runtime has failed. Checked at start only (every_s 0), c2 is pulsed
    through like c0."""
    cfg = _running_line(ref_bundle, tmp_path, every_s)
    blind = threading.Event()

    def wrap(be):
        class Engine:
            def infer(self, images):
                boxes, scores = be.infer(images)
                return boxes, scores * np.float32(0.2) if blind.is_set() else scores

        return Engine()

    f = MockFactory()
    with line_runtime(cfg, f, wrap, lambda o: None) as rt:
        gate, alarm = f.pin(cfg.gpio.ejector_pin), f.pin("GPIO6")
        gate.clear_states()
        if every_s:
            assert _until(lambda: rt.self_test.rounds["passed"] >= 1, 20)
        rt.submit(Job("c0", time.monotonic(), _quiet_frames(0)))
        assert rt.drain(20)
        if every_s:  # a round after c0 vouches for it
            assert _until(lambda: rt.self_test.rounds["passed"] >= 2, 20)
        blind.set()
        rt.submit(Job("c1", time.monotonic(), _quiet_frames(1)))
        assert rt.drain(20)
        if every_s:
            assert _until(lambda: rt.blind is not None, 20)
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
    assert "failed its reference frames mid-shift: found 0 of" in rows["c2"][2]
    assert pulses == 2 and alarm_up  # c0's and c1's pulses; none for c2
    assert failed is not None and "mid-shift" in failed
    assert "1 container(s) accepted since the last passed check (c1)" in reasons[0]
    # On record beside the rows, after c1's (seq 2), on a chain `fod audit verify` checks.
    events = [
        json.loads(x) for x in (tmp_path / "audit" / "events.jsonl").read_text().split("\n")[:-1]
    ]
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
    argv = ["simulate", "--sequences", str(small_set), "--containers", "8", "--rate", "120"]
    argv += ["--frames", "3", "--config", str(cfg), "--out", str(tmp_path / "sim")]
    assert main([*argv, "--faults", "blind=1.0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["injected"] == {"blind": 1} and s["reference_rounds"]["blind"] == 1
    assert "failed its reference frames mid-shift" in s["failed"] and s["alarms"] == 1
    assert s["faults"]["blind_model"] >= 1 and s["violations"] == []
    held = int(s["alarm_reasons"][0].split("; ")[1].split(" container(s)")[0])
    assert s["physically_passed"] <= held  # every container through the gate is named


def test_rounds_that_never_pass_raise_the_alarm(ref_bundle, tmp_path: Path, monkeypatch) -> None:
    """Every reference frame's model call raises (the containers' own calls run): no
    round passes, and past 2 periods + REFERENCE_GRACE_S the alarm pin goes up while the
    line goes on deciding (c0 before, c1 after: both accepted, both pulsed)."""
    monkeypatch.setattr("edge.reference.REFERENCE_GRACE_S", 0.5)
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
        assert _until(lambda: alarm.state, 20)
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
