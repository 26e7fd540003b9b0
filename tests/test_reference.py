"""Reference frames: a bundle carries images with known objects, and the unit's backend must
find them before `fod check` passes, `fod run` starts or a rollout switches. A blind engine
(an INT8 calibration gone wrong, a precision bug) gives outputs that pass every health
check and would accept every container."""

from __future__ import annotations

import dataclasses
import json
import re
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
    PICK_PER_CLASS,
    Reference,
    Rule,
    SelfTest,
    Sight,
    check_reference,
    class_needed,
    iou_matrix,
    load_reference,
    needed,
    pick_frames,
    reference_meta,
    reference_rule,
    save_reference,
    sightings,
)
from fod.cli import main
from fod.line import DEMO_BUNDLE

from .gate_run import rising_edges
from .test_runtime import _rows

BOXES = np.float32([[10, 10, 20, 20], [40, 40, 46, 50], [5, 5, 9, 9]])  # [3, 4]
REF = Reference(np.zeros((2, 32, 64), np.uint8), BOXES, np.int64([0, 0, 1]))


def _scripted(per_image: List[List[List[float]]]):
    """detect() answering image i with per_image[i]: rows [x1, y1, x2, y2, score(, class)]
    (class 0 where not given)."""
    calls = iter(per_image)

    def detect(frames) -> List[Detections]:
        rows = [r if len(r) == 6 else [*r, 0] for r in next(calls)]
        a = np.float32(rows).reshape(-1, 6)
        return [Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int64))]

    return detect


def test_found_objects_by_hand() -> None:
    assert iou_matrix(BOXES[:1], np.float32([[15, 10, 25, 20]]))[0, 0] == pytest.approx(50 / 150)
    detect = _scripted(
        [
            [[15, 10, 25, 20, 0.9], [40, 40, 46, 50, 0.4]],  # IoU 1/3: found; the 2nd unsure
            [[5, 5, 9, 9, 0.5]],  # exact, at the score: found
        ]
    )
    assert sightings(detect, REF).tolist() == [1, 0, 1]  # no labels: found by any class
    assert [needed(n) for n in (1, 2, 5, 10, 19)] == [1, 1, 4, 8, 15]
    rule = reference_rule({"found": 3, "measured_with": "onnxruntime int8_cpu"}, REF, [], "r")
    with pytest.raises(FodError, match=r"blind to its reference frames: found 1 of 3 .* 2 needed"):
        check_reference(_scripted([[[15, 10, 25, 20, 0.9]], []]), REF, rule, (32, 64), "r.npz")
    line = check_reference(
        _scripted([[[15, 10, 25, 20, 0.9]], []]), REF, Rule(1, "the maker"), (32, 64), "r"
    )
    assert line.startswith("found 1 of 3 reference objects (1 by the maker")
    with pytest.raises(FodError, match=r"reference frames are \(32, 64\), the model takes"):
        check_reference(_scripted([]), REF, rule, (32, 64, 3), "r.npz")


LABELLED = dataclasses.replace(REF, labels=np.int64([0, 1, 1]))  # a fibre, two particles
NAMES = ["fiber", "particle"]


def test_each_class_must_be_found_as_itself_by_hand() -> None:
    """With labelled objects the maker records, per class, the objects found as that class,
    and the unit must find CLASS_SHARE of those (classes under CLASS_MIN: the total only).
    An engine blind to one class - another class's detection on that object still counts
    in the total - fails on that class alone."""
    assert [class_needed(n) for n in (0, 1, 2, 3, 5, 8)] == [0, 0, 1, 1, 2, 4]
    all_found = [  # image 0: the fibre as a fibre, particle 1 as a fibre; image 1: as itself
        [[10, 10, 20, 20, 0.9, 0], [40, 40, 46, 50, 0.8, 0]],
        [[5, 5, 9, 9, 0.7, 1]],
    ]
    seen = sightings(_scripted(all_found), LABELLED)
    assert seen.tolist() == [2, 1, 2]  # own class, another class, own class
    meta = reference_meta(LABELLED, seen, "maker", 2)
    assert meta["found"] == 3 and meta["found_by_class"] == [1, 1]
    meta["found_by_class"] = [2, 2]  # judged with a maker that found two of each as itself
    with pytest.raises(FodError, match="found_by_class must be 2 counts"):
        reference_rule(meta, LABELLED, NAMES, "r")  # 4 > found: counted some objects twice
    meta["found"] = 4
    rule = reference_rule(meta, LABELLED, NAMES, "r")
    assert rule == Rule(4, "maker", (2, 2), ("fiber", "particle"))
    ok, line = rule.judge(seen, LABELLED)
    assert ok and line.endswith("found/the maker's: fiber 1/2 (>= 1), particle 1/2 (>= 1)")
    blind_to_particles = [
        [[10, 10, 20, 20, 0.9, 0], [40, 40, 46, 50, 0.8, 0]],
        [[5, 5, 9, 9, 0.7, 0]],
    ]
    ok, line = rule.judge(sightings(_scripted(blind_to_particles), LABELLED), LABELLED)
    assert (
        not ok
        and "found 3 of 3" in line
        and line.endswith("particle 0/2 (>= 1); blind to particle")
    )
    with pytest.raises(FodError, match=r"blind to its reference frames: .* blind to particle"):
        check_reference(_scripted(blind_to_particles), LABELLED, rule, (32, 64), "r")
    # The file and the manifest must agree: counts per class need the objects' classes.
    with pytest.raises(FodError, match="r: the reference objects need labels of the model's 2"):
        reference_rule(meta, REF, NAMES, "r")
    with pytest.raises(FodError, match="must be 2 counts"):
        reference_rule({**meta, "found_by_class": [1, 1, 1]}, LABELLED, NAMES, "r")
    # A bundle made before per-class counts: judged in the total, as it was.
    assert reference_rule({"found": 3}, LABELLED, NAMES, "r") == Rule(3, "the maker")


def test_pick_frames_covers_every_class_first() -> None:
    """Images bringing a class still short of PICK_PER_CLASS first, then the earliest
    others, in the set's order; the model runs only as far as needed."""
    assert PICK_PER_CLASS == 4
    found = [np.int64(x) for x in ([0, 0], [0, 0, 0], [], [1], [0], [2, 2, 2, 2], [1, 1, 1], [0])]
    read: List[int] = []

    def lazily():
        for i, f in enumerate(found):
            read.append(i)
            yield f

    # 0 and 1 bring fibres (4 by then), 2 nothing, 3 a particle, 4 only a fibre (enough of
    # those), 5 the flakes, 6 the particles: every class covered, reading stops at 6.
    assert pick_frames(lazily(), len(found), 8, 3) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert read == list(range(7))
    read.clear()
    assert pick_frames(lazily(), len(found), 5, 3) == [0, 1, 3, 5, 6]  # 2 and 4 left out
    assert pick_frames(iter(found), len(found), 3, 3) == [0, 1, 3]
    assert pick_frames(iter([np.int64([])] * 5), 5, 2, 3) == [0, 1]  # nothing found: earliest


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


def test_bundle_make_counts_each_class_by_the_fewest_of_its_models(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """A bundle with two models: the per-class counts are the fewest either model found as
    that class (a unit runs one of them), and a class found too rarely to be judged alone
    is named when the bundle is made. The second model here is the demo's, blind to glass
    flakes (their scores a fifth)."""
    if not DEMO_BUNDLE.exists():
        pytest.skip("no models/demo in this tree")
    argv = ["synth", "--out", str(tmp_path / "set"), "--images", "8", "--sequences", "0"]
    assert main([*argv, "--size", "640x384", "--seed", "77", "--look", "random"]) == 0
    with open_bundle(DEMO_BUNDLE) as b:
        model = b.file("int8_cpu")
        blind = tmp_path / "blind-to-flakes.onnx"
        blind.write_bytes(model.read_bytes())
        init, run = OnnxRuntimeBackend.__init__, OnnxRuntimeBackend.run

        def opened(self, path, *a, **k):
            init(self, path, *a, **k)
            self.dim = Path(path) == blind

        def dimmed(self, x):
            boxes, scores = run(self, x)
            if self.dim:
                scores = scores.copy()
                scores[:, :, 2] *= np.float32(0.2)
            return boxes, scores

        monkeypatch.setattr(OnnxRuntimeBackend, "__init__", opened)
        monkeypatch.setattr(OnnxRuntimeBackend, "run", dimmed)
        argv = ["bundle", "make", "--int8-cpu", str(model), "--reference", str(tmp_path / "set")]
        assert main([*argv, "--reference-images", "4", "--out", str(tmp_path / "one")]) == 0
        assert "judged only in the total" not in capsys.readouterr().err
        assert (
            main(
                [
                    *argv,
                    "--reference-images",
                    "4",
                    "--onnx",
                    str(blind),
                    "--out",
                    str(tmp_path / "two"),
                ]
            )
            == 0
        )
        err = capsys.readouterr().err
    one, two = (
        json.loads((tmp_path / d / "manifest.json").read_text())["reference"]
        for d in ("one", "two")
    )
    assert one["found_by_class_of"] == ["int8_cpu"] and one["found_by_class"][2] >= 2
    assert two["found_by_class_of"] == ["int8_cpu", "fp32"] and two["found"] == one["found"]
    assert two["found_by_class"][:2] == one["found_by_class"][:2] and two["found_by_class"][2] == 0
    assert "glass_flake found as glass_flake 0 time(s) by the fewest of int8_cpu, fp32" in err


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
        ann["annotations"][0]["bbox"][2] = 3.0
        ann["categories"][1]["name"] = "dust"  # a set labelled for another model
        (small / "annotations.json").write_text(json.dumps(ann))
        assert main([*argv, "--reference", str(small)]) == 2
        err = capsys.readouterr().err
        assert "annotations.json: categories ['dust'] are not the model's classes" in err
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
    why = "found 0 of" if dimmed == slice(None) else "glass_flake 0/2 (>= 1); blind to glass_flake"
    assert "failed its reference frames mid-shift: " in rows["c2"][2] and why in rows["c2"][2]
    if dimmed != slice(None):  # enough in all: the flakes' own count is what failed
        got, need = re.search(r"found (\d+) of .* at least (\d+) needed", rows["c2"][2]).groups()
        assert int(got) >= int(need)
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
    held = int(re.search(r"; (\d+) container\(s\) accepted since", s["alarm_reasons"][0])[1])
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
