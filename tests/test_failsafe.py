"""Fail-safe, judged by what physically happened: every fault class, injected where it really
happens, through `fod simulate` and its gate model over the MockPin history. The decision
is set to accept every container (min_evidence 99), so only a fault can reject it: a fault
that let its container through would show as a physical pass."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.faults import FAULT_KINDS, Injector
from edge.sim_camera import SimCamera
from edge.simulate import (
    Container,
    Physical,
    gate_model,
    judge,
    machine_fault_violations,
    pin_intervals,
    run_line,
    safety_violations,
)
from edge.sources import Frame
from fod.cli import main

N = 4


def _simulate(bundle: Path, seqs: Path, out: Path, faults: str, capsys, wiring="accept") -> dict:
    assert main(_argv(bundle, seqs, out, faults, wiring)) == 0
    return json.loads(capsys.readouterr().out)


def _argv(bundle: Path, seqs: Path, out: Path, faults: str, wiring="accept") -> list:
    cfg = out.parent / f"{out.name}.toml"
    cfg.write_text("[decision]\nmin_evidence = 99.0\n[gpio]\nalarm_faults = 3\n")
    return [
        "simulate", "--bundle", str(bundle), "--sequences", str(seqs), "--containers", str(N),
        "--rate", "120", "--delay-ms", "1500", "--frames", "3", "--out", str(out),
        "--config", str(cfg), "--faults", faults, "--wiring", wiring, "--json",
    ]  # fmt: skip


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_fault_class_rejects_physically_and_is_audited(
    kind: str, bundle: Path, small_set: Path, tmp_path: Path, capsys, caplog
) -> None:
    s = _simulate(bundle, small_set, tmp_path / "sim", f"{kind}=1.0", capsys)
    # min_evidence 99: only faults can reject here, which `fod run` would refuse to run.
    assert "no detection could reject a container: decision.min_evidence 99" in caplog.text
    assert s["containers"] == N and s["ghost_containers"] == 0
    assert s["passed_faulty"] == 0 and s["audit_disagrees"] == 0
    assert main(["audit", "verify", str(tmp_path / "sim" / "audit")]) == 0
    if kind == "bounce":  # debounced: one container per trigger, each accepted unless late
        # Every chatter edge filtered (3 a trigger; fewer where this thread was preempted
        # mid-chatter: an edge then would be a second trigger, not a bounce).
        assert s["bounces_filtered"] == s["bounce_edges"] >= N
        # On a loaded machine a decision can miss its gate: that container is rejected and
        # recorded as a timing fault, never as a bounce's doing.
        assert set(s["faults"]) <= {"late", "stall", "camera_drop"}, s["faults"]
        assert s["physically_passed"] + sum(s["faults"].values()) >= N
        return
    if kind == "slow":  # 0.6 of the delay: late or not, never an unrecorded pass
        assert s["physically_passed"] + sum(s["faults"].values()) >= N
        return
    if kind == "gpio_error":  # drawn per pulse at the gate output, later in time
        assert s["injected"][kind] >= 1 and s["faults"].get("gpio_error", 0) >= 1
        assert s["physically_passed"] <= N - s["faults"]["gpio_error"]
        return
    assert s["injected"].get(kind, 0) >= 1
    if kind == "stall":  # the camera hangs past the gate: the containers behind it stall too
        assert s["physically_passed"] <= N - s["injected"]["stall"]
        assert s["faults"].get("stall", 0) >= 1
        return
    assert s["physically_passed"] == 0, s  # each container had its fault; none may pass
    assert sum(s["faults"].values()) >= N and s["alarms"] >= 1
    if kind == "thread_crash":  # 4 crashes > max_restarts 3: the inference stage stays down
        assert s["failed"] and "inference" in s["failed"]


def test_a_decision_bug_with_no_fault_injected_rejects_and_exits_3(
    bundle: Path, small_set: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """A real bug, not an injected fault: the decision rule raises on every container. The
    stage is restarted until it stays down; every container is rejected at the pins, the
    alarm is raised, and the run is red (3, as `fod run`), not a quiet 0."""
    import edge.runtime

    def broken(*_a, **_k):
        raise ZeroDivisionError("a bug in the decision rule")

    monkeypatch.setattr(edge.runtime, "decide", broken)
    assert main(_argv(bundle, small_set, tmp_path / "sim", "")) == 3
    cap = capsys.readouterr()
    s = json.loads(cap.out)
    assert s["injected"] == {} and s["failed"] and "inference" in s["failed"]
    assert s["physically_passed"] == 0 and s["alarms"] >= 1  # min_evidence 99: else all pass
    assert s["passed_faulty"] == 0 and s["audit_disagrees"] == 0 and not s["violations"]
    assert "no fault injected" in cap.err and s["failed"] in cap.err


def test_faults_with_the_reject_wiring(bundle: Path, small_set: Path, tmp_path: Path, capsys):
    s = _simulate(bundle, small_set, tmp_path / "sim", "camera_drop=0.5,nan=0.5", capsys, "reject")
    assert s["wiring"] == "reject"
    assert s["passed_faulty"] == 0 and s["audit_disagrees"] == 0
    assert s["physically_passed"] == N - sum(1 for v in s["faults"].values() for _ in range(v))


def test_stale_frames_before_the_trigger_are_dropped(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    s = _simulate(bundle, small_set, tmp_path / "sim", "", capsys)
    # The simulated camera hands one buffered frame of the previous container first.
    assert s["stale_frames_dropped"] == N - 1 and s["physically_passed"] == N
    assert s["audit_disagrees"] == 0


def test_an_appended_run_is_judged_on_its_own_rows(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "sim"
    _simulate(bundle, small_set, out, "camera_drop=1.0", capsys)  # all rejected
    argv_tail = ["--append"]
    # A wide gate margin (60/min, 3 s): every container must be accepted even on a busy CPU.
    cfg = out.parent / f"{out.name}.toml"
    argv = [
        "simulate", "--bundle", str(bundle), "--sequences", str(small_set), "--containers",
        str(N), "--rate", "60", "--delay-ms", "3000", "--frames", "3", "--out", str(out),
        "--config", str(cfg), "--json", *argv_tail,
    ]  # fmt: skip
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)  # same container ids, now all accepted
    assert s["physically_passed"] == N and s["audit_disagrees"] == 0 and s["ghost_containers"] == 0
    assert main(["audit", "verify", str(out / "audit")]) == 0


def test_gate_model_reads_pin_history() -> None:
    f = MockFactory()
    pin = f.pin("GPIO17")
    pin.function = "output"
    t0 = time.monotonic()
    pin.clear_states()
    time.sleep(0.1)
    t_on = time.monotonic()
    pin.state = True
    time.sleep(0.02)
    t_off = time.monotonic()
    pin.state = False
    t_end = time.monotonic()
    (on,) = pin_intervals(pin, t0)
    # Bounds from clocks read around each change, not from the sleeps: a loaded machine
    # oversleeps. 5 ms of slack covers the time between reading t0 and clearing the pin.
    assert t_on - 0.005 <= on[0] <= t_off and t_off - 0.005 <= on[1] <= t_end
    # a's gate opens as the pulse starts; b's opens 10 ms after it ended (5 ms of lead).
    cs = [Physical("a", "accept", on[0] - 0.1), Physical("b", "reject", on[1] - 0.09)]
    gate_model(cs, [on], 0.1, 0.04, "accept")
    assert [c.passed for c in cs] == [True, False]
    gate_model(cs, [on], 0.1, 0.04, "reject")
    assert [c.passed for c in cs] == [False, True]


def test_judge_keeps_fault_rejects_out_of_the_models_rates() -> None:
    """A fault rejects a good container as surely as the model does; the line's rates count both,
    the model's own rates only the containers no fault touched."""

    def c(truth: str, passed: bool, faulted: bool = False) -> Physical:
        return Physical(
            "c", truth, 0.0, passed=passed, audit="accept" if passed else "reject", faulted=faulted
        )

    v = judge(
        [
            c("reject", False),
            c("reject", True),
            c("reject", False, faulted=True),
            c("accept", True),
            c("accept", True),
            c("accept", False),
            c("accept", False, faulted=True),
        ]
    )
    assert v["detection_rate"] == pytest.approx(2 / 3) and v["false_reject_rate"] == 0.5
    assert v["model_detection_rate"] == 0.5 and v["model_false_reject_rate"] == pytest.approx(1 / 3)
    assert v["fault_rejects"] == 2 and v["missed_by_model"] == 1 and v["passed_faulty"] == 0
    assert judge([c("accept", False, faulted=True)])["model_false_reject_rate"] is None


def test_machine_faults_are_judged_by_record_and_alarm() -> None:
    """Under a machine fault a passed faulty container is red (`violations`) whatever the
    unit did; what the unit owes is the record and the alarm (`machine_violations`)."""
    s = {"passed_faulty": 2, "audit_disagrees": 0, "ghost_containers": 0, "alarms": 1}
    assert safety_violations(s) == ["passed_faulty=2"] and machine_fault_violations(s) == []
    assert machine_fault_violations({**s, "alarms": 0}) == ["passed_faulty=2 without an alarm"]
    assert machine_fault_violations({**s, "audit_disagrees": 3, "ghost_containers": 1}) == [
        "audit_disagrees=3",
        "ghost_containers=1",
    ]
    assert machine_fault_violations({**s, "passed_faulty": 0, "alarms": 0}) == []


def test_sim_line_opens_each_video_before_its_trigger(tmp_path: Path) -> None:
    """Opening a video is slow (seconds for the first while the runtime starts): opened at
    its trigger, the first container came 2 s late, the second right behind it, and the
    first one's capture read the second's frames ("frame 5 of 8 missing"). Each capture
    here reads 8 frames of 40 ms; every container must see only its own video."""
    opened: list = []

    class Reader:  # one container's video of 8 frames; each read noted for the capture
        def __init__(self, spec: str) -> None:
            time.sleep(1.0 if not opened else 0.2)  # the first open pays the start-up
            self.name, self.left = Path(spec.partition(":")[2]).name, 8
            opened.append(self.name)

        def read(self):
            if self.left == 0:
                return None
            time.sleep(0.04)
            self.left -= 1
            seen[-1][1].append(self.name)
            return Frame(np.zeros((4, 4), np.uint8), time.monotonic())

        def close(self) -> None:
            pass

    seen: list = []  # (container, videos its frames came from)
    captures: list = []

    class FakeRuntime:
        class io:
            on_trigger = None

            class debounce:
                bounce_s = 0.01

        def submit(self, job) -> None:
            def capture() -> None:
                seen.append((job.container_id, []))
                for _ in range(9):  # the stale frame, then 8 of the container's
                    job.read_frame()

            t = threading.Thread(target=capture)  # the camera stage, one job at a time
            if captures:
                captures[-1].join()
            captures.append(t)
            t.start()

    rt = FakeRuntime()
    f = MockFactory()
    trigger = f.pin(17)

    def on_trigger(cb) -> None:  # the runtime's trigger input: rising edges
        def edge(ticks, state) -> None:
            if state:
                cb(time.monotonic())

        handlers.append(edge)  # gpiozero keeps a weak reference
        trigger.when_changed = edge

    handlers: list = []

    rt.io.on_trigger = on_trigger
    cam = SimCamera(Reader, Injector({}, 0), stall_s=0.0)
    line = [Container(f"v{i}", tmp_path / f"v{i}.avi", "accept") for i in range(3)]
    run_line(rt, trigger, cam, Injector({}, 0), line, 3, rate_per_min=120)
    for t in captures:
        t.join(5)
    cam.close()
    assert [(cid, set(videos)) for cid, videos in seen] == [
        (f"v{i}-{i}", {f"v{i}.avi"}) for i in range(3)
    ]


def test_sim_camera_open_reads_the_file_and_names_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`open` reads the video file before the reader opens it (into the page cache: a frame
    read from disk at capture time was late) and still lets the reader name a missing file."""
    from edge.sources import SourceError, open_source

    cam = SimCamera(lambda spec: open_source(spec, mono=True), Injector({}, 0), stall_s=0.0)
    with pytest.raises(SourceError, match=r"nothere\.avi: no such video file"):
        cam.open(tmp_path / "nothere.avi")
    events: list = []
    path_open = Path.open

    class Recording:  # the file as `open` reads it: how many bytes, in what chunks
        def __init__(self, f) -> None:
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

        def read(self, n: int) -> bytes:
            got = self.f.read(n)
            events.append(f"read {len(got)} of at most {n}")
            return got

    (tmp_path / "v.avi").write_bytes(b"x" * (3 << 20))
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: Recording(path_open(self, *a, **k)))
    cam = SimCamera(lambda spec: events.append(f"open {spec}"), Injector({}, 0), stall_s=0.0)
    cam.open(tmp_path / "v.avi")
    mib = 1 << 20  # the whole file, in chunks that never hold it all, before the reader opens
    assert events == [f"read {mib} of at most {mib}"] * 3 + [
        f"read 0 of at most {mib}",
        f"open file:{tmp_path / 'v.avi'}",
    ]


def test_sim_camera_never_closes_a_reader_mid_read(tmp_path: Path) -> None:
    """The triggers' thread swaps videos while the camera stage reads: a reader closed in
    the middle of its read (OpenCV decodes without the GIL) crashed `fod simulate` with a
    segfault in libavcodec. Here every read takes 2 ms and the videos are swapped 300
    times from another thread; a close that lands inside a read is counted."""
    clashes, reads = [], []

    class SlowReader:
        def __init__(self) -> None:
            self.busy = self.closed = False

        def read(self):
            self.busy = True
            time.sleep(0.002)  # a decode, the GIL released
            if self.closed:
                clashes.append("read after close")
            self.busy = False
            reads.append(1)
            return Frame(np.zeros((4, 4), np.uint8), time.monotonic())

        def close(self) -> None:
            if self.busy:
                clashes.append("closed mid-read")
            self.closed = True

    cam = SimCamera(lambda spec: SlowReader(), Injector({}, 0), stall_s=0.0)
    cam.show("c0", cam.open(tmp_path / "c0.avi"))
    done = threading.Event()

    def camera_stage() -> None:
        while not done.is_set():
            cam.read()

    t = threading.Thread(target=camera_stage)
    t.start()
    try:
        for i in range(300):
            cam.show(f"c{i}", cam.open(tmp_path / f"c{i}.avi"))
            time.sleep(0.001)
    finally:
        done.set()
        t.join(5)
    cam.close()
    assert len(reads) > 50 and clashes == []
