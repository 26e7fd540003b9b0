"""Which time a camera frame was taken: a V4L2 driver queues frames while nobody reads, and a
frame grabbed after a container's trigger may have been exposed before it. Its buffer's
timestamp says so; frames stamped only at the grab would pass for the container's own.

No V4L2 device runs here: a real video file stands in for the frames, and a thin wrapper
around OpenCV's capture reports buffer timestamps as the V4L2 backend does
(CAP_PROP_POS_MSEC: the kernel's monotonic clock, in ms)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, List

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

import edge.sources
from edge.app import line_runtime
from edge.capture import capture_frames
from edge.config import CameraConfig, LineConfig
from edge.jobs import Job
from edge.preflight import OK, WARN, check_camera
from edge.reference import load_reference
from edge.simulate import pin_intervals
from edge.sources import (
    STAMP_SLACK_S,
    CaptureSource,
    Frame,
    SourceError,
    driver_time,
    open_source,
    source_problem,
)

from .gate_run import rising_edges
from .test_reference_rounds import _running_line
from .test_runtime import _cfg, _frames, _rows

H, W, FRAMES = 48, 64, 8


def _video(path: Path) -> Path:
    """FRAMES frames, frame i a fixed texture plus 20 * i grey levels (FFV1: lossless)."""
    texture = np.random.default_rng(0).integers(0, 40, (H, W), dtype=np.uint8)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (W, H), False)
    for i in range(FRAMES):
        out.write(texture + np.uint8(20 * i + 10))
    out.release()
    return path


def _index(img: np.ndarray) -> int:
    """The frame's number in _video."""
    return round((float(img.mean()) - 10 - 19.5) / 20)


class Queued:
    """OpenCV's capture of the video, reporting each frame's buffer timestamp as the V4L2
    backend does: `stamps()` gives frame i's, in ms."""

    def __init__(self, cap: cv2.VideoCapture, stamps: Callable[[int], float]) -> None:
        self.cap, self.stamps, self.i = cap, stamps, -1

    def grab(self) -> bool:
        self.i += 1
        return self.cap.grab()

    def retrieve(self):
        return self.cap.retrieve()

    def get(self, prop: int) -> float:
        assert prop == cv2.CAP_PROP_POS_MSEC
        return self.stamps(self.i)

    def release(self) -> None:
        self.cap.release()


def _source(video: Path, stamps: Callable[[int], float], driver: bool = True) -> CaptureSource:
    src = CaptureSource(str(video), what="v4l2:0", mono=True, driver_stamps=driver)
    src.cap = Queued(src.cap, stamps)
    return src


def test_driver_time_takes_the_monotonic_clock_only() -> None:
    now = time.monotonic()
    assert driver_time(1000.0 * (now - 600), now) == pytest.approx(now - 600)  # queued long
    assert driver_time(1000.0 * (now + STAMP_SLACK_S / 2), now) is not None
    assert driver_time(1000.0 * time.time(), now) is None  # wall-clock: far in the future
    assert driver_time(0.0, now) is None  # OpenCV before the first frame
    assert driver_time(math.nan, now) is None and driver_time(-5.0, now) is None


def test_frames_queued_before_the_trigger_are_not_the_containers(tmp_path: Path) -> None:
    """Four frames waited in the driver's queue from before the trigger (stamped 0.5-0.2 s
    before it), the rest come after it. Stamped by the driver, the container gets frames 4,
    5 and 6 and the four queued ones are skipped; stamped at the grab (as before), it got
    frames 0-2: three frames of whatever stood under the camera before its trigger."""
    video = _video(tmp_path / "cam.avi")
    trigger = time.monotonic()

    def stamps(i: int) -> float:  # ms; queued frames 100 ms apart, then fresh ones
        return 1000.0 * (trigger - 0.5 + 0.1 * i if i < 4 else time.monotonic())

    def container(src: CaptureSource) -> tuple:
        got = capture_frames(src.read, trigger, math.inf, 3, (H, W), None, 1000.0)
        assert got.fault is None, got.reason
        return [_index(f) for f in got.frames], got.stale

    assert container(_source(video, stamps)) == ([4, 5, 6], 4)
    assert container(_source(video, stamps, driver=False)) == ([0, 1, 2], 0)


def test_a_camera_that_only_replays_frames_from_before_the_trigger_ends_the_capture() -> None:
    """A driver stuck handing over old buffers (every frame stamped before the trigger):
    each is skipped, a bounded number of them (4 + 2 x the frames wanted), then the capture
    ends with `camera_drop` - a reject - instead of reading on past the container's gate."""
    img = np.random.default_rng(0).integers(40, 200, (H, W), dtype=np.uint8)
    trigger, reads = time.monotonic(), []

    def read() -> Frame:
        reads.append(1)
        return Frame(img, trigger - 0.5)

    got = capture_frames(read, trigger, math.inf, 3, (H, W), None, 1000.0)
    assert got.fault == "camera_drop" and "only frames from before the trigger" in got.reason
    assert got.frames == [] and got.stale == len(reads) == 4 + 2 * 3


def test_a_frame_whose_time_is_no_time_of_the_clock_ends_the_capture() -> None:
    """A source that hands over frames stamped NaN, or later than now (another clock): the
    capture cannot tell whether such a frame shows the container or one before it, so the
    container gets a fault (a reject), where it used to take the frame as its own."""
    img = np.random.default_rng(0).integers(40, 200, (H, W), dtype=np.uint8)
    for t in (math.nan, time.monotonic() + 60.0, time.time()):
        read = iter([Frame(img, t)]).__next__
        got = capture_frames(read, time.monotonic() - 1, math.inf, 1, (H, W), None, 1000.0)
        assert got.fault == "corrupt_frame" and "not of the monotonic clock" in got.reason, t
        assert got.frames == []
    fresh = iter([Frame(img, time.monotonic())]).__next__  # a frame of the clock: taken
    got = capture_frames(fresh, time.monotonic() - 1, math.inf, 1, (H, W), None, 1000.0)
    assert got.fault is None and len(got.frames) == 1


def test_a_container_whose_frames_carry_no_time_of_the_clock_is_rejected_at_the_gate(
    bundle: Path, tmp_path: Path
) -> None:
    """Accept wiring, a rule that accepts these frames: c0's camera stamps its frames NaN,
    c1's are plain. The gate pin must energise once, at c1's gate time, never at c0's."""
    cfg = _cfg(bundle, tmp_path, decision={"min_evidence": 99.0})
    f = MockFactory()
    frames = _frames()

    def nan_stamped():
        img = frames()
        return None if img is None else Frame(img, math.nan)

    delay = cfg.gpio.delay_ms / 1000
    with line_runtime(cfg, f) as rt:
        gate = f.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        t_clear = t0 = time.monotonic()
        rt.submit(Job("c0", t0, nan_stamped))
        assert rt.drain(10)
        time.sleep(0.3)  # apart from c0's trigger (closer, neither would be released)
        t1 = time.monotonic()
        rt.submit(Job("c1", t1, _frames()))
        assert rt.drain(10) and rt.io.pulses.wait_idle(delay + 2)
    on = pin_intervals(gate, t_clear)
    assert len(on) == 1 and abs(on[0][0] - (t1 + delay)) < 0.1, (on, t0, t1)
    rows = _rows(tmp_path)
    assert rows["c0"][:2] == ("reject", "corrupt_frame") and rows["c1"][:2] == ("accept", None)


def test_a_driver_off_the_monotonic_clock_is_stamped_at_the_grab_and_warned(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    video = _video(tmp_path / "cam.avi")
    src = _source(video, lambda i: 1000.0 * time.time())  # wall-clock stamps
    before = time.monotonic()
    with caplog.at_level(logging.WARNING, "edge.sources"):
        frames: List[float] = [src.read().t for _ in range(3)]
    assert src.stamps == "grab" and all(before <= t <= time.monotonic() for t in frames)
    assert caplog.text.count("not of the monotonic clock") == 1  # once, not per frame

    # `fod check` says so for the camera of the line config; a driver on the clock passes.
    cfg = LineConfig(camera=CameraConfig(source="v4l2:0", frames=3, mono=True))
    for clock, status in ((time.time, WARN), (time.monotonic, OK)):
        monkeypatch.setattr(
            edge.sources,
            "open_source",
            lambda spec, mono, c=clock: _source(video, lambda i: 1000.0 * c()),
        )
        check = check_camera(cfg)
        assert check.status == status, check.detail
    assert "stamped by the driver" in check.detail


@pytest.mark.parametrize(
    "pipeline, queues",
    [
        ("nvarguscamerasrc ! nvvidconv ! videoconvert ! appsink", True),
        ("v4l2src ! videoconvert ! appsink drop=true max-buffers=1", False),
        ("v4l2src ! videoconvert ! appsink sync=false max-buffers=1 drop=1", False),
        ("v4l2src ! appsink drop=true", True),  # unbounded, dropping nothing
        ("v4l2src ! appsink max-buffers=1", True),  # blocks the camera on its one old frame
        ("v4l2src ! appsink drop=true max-buffers=4", True),
        ("v4l2src ! fakesink", True),
    ],
)
def test_an_appsink_that_queues_frames_is_named(pipeline: str, queues: bool) -> None:
    """GStreamer frames are stamped at the grab: only an appsink that keeps the newest
    frame alone leaves at most one from before a trigger (`fod check` warns otherwise)."""
    assert edge.sources.appsink_queues(pipeline) is queues


@pytest.mark.parametrize("driver", [True, False], ids=["driver-stamps", "grab-stamps"])
def test_a_queued_frame_cannot_pass_a_defective_container_at_the_gate(
    ref_bundle: Path, tmp_path: Path, driver: bool
) -> None:
    """Through the runtime (the demo's INT8-CPU model, MockFactory pins): four frames of
    the container before (sensor noise, nothing in it) wait in the driver's queue from
    before c0's trigger; c0's own frames show its objects sinking 12 px a frame. With the
    driver's stamps the queued frames are skipped and c0 is rejected by its particles'
    paths, no pulse; stamped at the grab (as before), c0 was judged on the container
    before's frames, accepted and pulsed through."""
    ref = load_reference(ref_bundle / "reference.npz")
    rng = np.random.default_rng(0)
    quiet = [np.clip(128 + rng.normal(0, 8, (384, 640)), 0, 255).astype(np.uint8) for _ in "abcd"]
    sinking = [np.roll(ref.images[0], 12 * k, axis=0) for k in range(4)]
    path = tmp_path / "cam.avi"
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10.0, (640, 384), False)
    for f in quiet + sinking:
        out.write(f)
    out.release()
    cfg = _running_line(ref_bundle, tmp_path, 0.0)
    factory = MockFactory()
    with line_runtime(cfg, factory, None, lambda o: None) as rt:
        gate = factory.pin(cfg.gpio.ejector_pin)
        gate.clear_states()
        trigger = time.monotonic()

        def stamps(i: int) -> float:  # ms: the queued frames 100 ms apart, then fresh ones
            return 1000.0 * (trigger - 0.5 + 0.1 * i if i < 4 else time.monotonic())

        rt.submit(Job("c0", trigger, _source(path, stamps, driver).read))
        assert rt.drain(20) and rt.io.pulses.wait_idle(15)
        pulses = rising_edges(gate)
        stale = rt.counts["stale_frames"]
    decision, fault, reason = _rows(tmp_path)["c0"]
    if driver:
        assert (decision, fault, pulses, stale) == ("reject", None, 0, 4)
        assert "moving particle" in reason
    else:
        assert (decision, fault, pulses, stale) == ("accept", None, 1, 0)


def test_a_v4l2_device_is_an_index_or_a_device_path() -> None:
    """`v4l2:0` and `v4l2:/dev/video0` both name a V4L2 device, handed to OpenCV's V4L2
    backend as an index or a path; any other spelling is refused by name where it was
    int()'s traceback."""
    assert source_problem("v4l2:0") is None and source_problem("v4l2:/dev/video2") is None
    for spec in ("v4l2:cam0", "v4l2:"):
        with pytest.raises(SourceError, match=f"camera source '{spec}': expected a device"):
            open_source(spec)
    with pytest.raises(SourceError, match="v4l2:/dev/no-such-video: cannot open camera source"):
        open_source("v4l2:/dev/no-such-video")
