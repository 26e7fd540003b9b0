"""`fod run`'s production loop (`edge.app.run_forever`) as a unit on a line runs it: a
camera (a folder of frames), containers triggered by edges of the GPIO trigger input,
the decision the unit ships with. Judged at the gate pin: each container's pulse agrees
with its row."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import run_forever
from edge.audit_verify import verify
from edge.gpio import LineIO
from edge.simulate import pin_intervals
from fod.cli import main

from .test_runtime import _cfg, _rows

TRIGGER = "GPIO22"


def _frame_folder(videos: List[Path], still: int, tmp_path: Path) -> Tuple[Path, int]:
    """The frames of `videos` in turn as one PNG folder (a camera that images one container
    after another), except that container `still` shows its first frame throughout, with
    fresh sensor noise each time: nothing in it moves, so nothing is a moving particle
    -> the folder, and the frames a container has."""
    out, rng, n = tmp_path / "camera", np.random.default_rng(0), 0
    out.mkdir()
    for i, v in enumerate(videos):
        cap, frames = cv2.VideoCapture(str(v)), []
        ok, img = cap.read()
        while ok:
            frames.append(img)
            ok, img = cap.read()
        cap.release()
        if i == still:
            noise = [rng.integers(-2, 3, frames[0].shape) for _ in frames]
            frames = [np.clip(frames[0] + e, 0, 255).astype(np.uint8) for e in noise]
        for img in frames:
            n += 1
            cv2.imwrite(str(out / f"{n:06d}.png"), img)
    assert frames and n == len(videos) * len(frames), n
    return out, len(frames)


def test_the_production_loop_decides_each_container_triggered_at_its_pin(
    ref_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three edges of the trigger pin, 0.4 s apart, while `run_forever` runs with
    `--max-containers 3`: three containers, each read from the camera in turn (the frames
    of three `fod synth` sequences, the second held still), decided by the demo model and
    the default rule, on record, and released at its edge + delay where accepted (the
    accept wiring: one pulse for each accept, none for a reject); the loop ends by itself
    and the trail verifies. No test ran this path before: `fod run`'s tests use a timer."""
    argv = ["synth", "--out", str(tmp_path / "set"), "--images", "0", "--sequences", "3"]
    assert main([*argv, "--size", "640x384", "--seed", "5"]) == 0
    videos = sorted((tmp_path / "set" / "sequences").glob("*.avi"))
    camera, n = _frame_folder(videos, 1, tmp_path)
    h, w = cv2.imread(str(next(camera.iterdir()))).shape[:2]
    cfg = _cfg(
        ref_bundle,
        tmp_path,
        camera={"source": f"file:{camera}", "frames": n, "width": w, "height": h, "mono": True},
        gpio={"trigger_pin": TRIGGER, "delay_ms": 2000.0, "pulse_ms": 100},
    )
    f, stop, done, armed = MockFactory(), threading.Event(), threading.Event(), threading.Event()
    attach = LineIO.on_trigger  # the runtime is up and its handler on the pin: edges count
    monkeypatch.setattr(LineIO, "on_trigger", lambda io, cb: (attach(io, cb), armed.set()))
    loop = threading.Thread(
        target=lambda: (run_forever(cfg, stop, max_containers=3, pin_factory=f), done.set())
    )
    loop.start()
    trigger, gate = f.pin(TRIGGER), f.pin(cfg.gpio.ejector_pin)
    try:
        while not armed.wait(0.1):
            assert loop.is_alive(), "the loop ended before it put its handler on the trigger pin"
        gate.clear_states()
        t_clear, edges = time.monotonic(), []
        for _ in range(3):
            edges.append(time.monotonic())
            trigger.drive_high()
            trigger.drive_low()
            time.sleep(0.4)
        loop.join(30)
    finally:
        stop.set()
        loop.join(30)
    assert done.is_set(), "the loop did not end after its 3 containers"
    on = pin_intervals(gate, t_clear)
    rows = _rows(tmp_path)
    assert sorted(rows) == ["r1-000001", "r1-000002", "r1-000003"]
    assert rows["r1-000002"][0] == "accept"  # the still one; the others show moving particles
    assert {row[0] for row in rows.values()} == {"accept", "reject"}, rows
    gated: Dict[str, float] = {  # each accept's gate time: its edge + delay
        cid: t + cfg.gpio.delay_ms / 1000 for cid, t in zip(sorted(rows), edges)
    }
    accepted = [gated[c] for c, row in sorted(rows.items()) if row[0] == "accept"]
    assert len(on) == len(accepted), (on, rows)
    assert all(abs(a - g) < 0.2 for (a, _), g in zip(on, accepted)), (on, accepted)
    assert verify(cfg.audit.folder).rows == 3
