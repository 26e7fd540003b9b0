"""`fod simulate` with no --rate: at most 30 containers a minute, fewer where the model,
timed at the start, would be over 70 % busy with the containers and its reference rounds."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge.errors import FodError
from edge.simulate import AUTO_RATE_MAX, auto_rate, out_of_reach, sustainable_rate
from fod.cli import main


def test_sustainable_rate_by_hand() -> None:
    # 190 ms a frame, 8 frames, 8 reference frames every 10 s: rounds take 0.152 of the
    # time, containers the rest of 0.7: 60 * 0.548 / 1.52 = 21.6 a minute.
    assert sustainable_rate(0.19, 8, 8, 10.0) == 21.6
    assert sustainable_rate(0.19, 8, 0, 10.0) == 27.6  # no rounds: 60 * 0.7 / 1.52
    assert sustainable_rate(0.01, 8, 8, 10.0) == AUTO_RATE_MAX  # a GPU: the line's rate
    assert sustainable_rate(5.0, 8, 8, 10.0) == 1.0  # rounds alone overload it: the floor
    assert sustainable_rate(0.0, 8, 8, 10.0) == AUTO_RATE_MAX


class _SlowDetector:
    def __init__(self, s: float) -> None:
        self.s, self.shapes = s, []

    def detect(self, frames):
        self.shapes.append(frames[0].shape)
        time.sleep(self.s)
        return [None]


@pytest.mark.parametrize("rounds", [True, False])
def test_auto_rate_times_the_runtimes_detector(rounds: bool) -> None:
    det = _SlowDetector(0.05)
    st = SimpleNamespace(sight=SimpleNamespace(ref=SimpleNamespace(images=np.zeros((4, 8, 8)))))
    st.every_s = 2.0
    rt = SimpleNamespace(frame_shape=(48, 64), detector=det, self_test=st if rounds else None)
    rate, frame_s = auto_rate(rt, 40)
    assert frame_s >= 0.05 and det.shapes == [(48, 64)] * 6  # a first call, then five timed
    assert rate == sustainable_rate(frame_s, 40, 4 if rounds else 0, 2.0)
    assert rate < AUTO_RATE_MAX  # 2 s a container: 0.7 of a minute is fewer than 30


def test_fod_simulate_without_a_rate_says_what_it_chose(
    bundle: Path, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture, caplog
) -> None:
    argv = ["simulate", "--bundle", str(bundle), "--sequences", str(small_set), "--frames", "2"]
    argv += ["--containers", "2", "--out", str(tmp_path / "sim"), "--json"]
    assert main(argv) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["rate_from_frame_ms"] > 0  # `bundle` has no reference frames: no rounds
    want = sustainable_rate(s["rate_from_frame_ms"] / 1000, 2, 0, 1.0)
    assert s["rate_per_min"] == pytest.approx(want, abs=0.11)  # from the rounded ms
    assert "every container will be rejected" not in caplog.text
    # A gate the model cannot reach (a Jetson's delay on a CPU): said before the line runs.
    caplog.clear()
    argv[-2] = str(tmp_path / "sim2")
    cfg = tmp_path / "fast-gate.toml"  # 2 ms from trigger to gate: no CPU decides in that
    cfg.write_text(
        "[gpio]\ndelay_ms = 2.0\npulse_ms = 1.0\ngate_feedback_ms = 0.5\n"
        "[timing]\ndecision_margin_ms = 0.5\n[metrics]\nport = 0\n"
    )
    assert main([*argv, "--config", str(cfg)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert "gate is 2 ms after the trigger: every container will be rejected" in caplog.text
    assert s["physically_passed"] == 0 and s["deadline_misses"] == 2, s["faults"]


def test_out_of_reach() -> None:
    assert out_of_reach(8, 0.05, 0.6) is None  # 400 ms of 600
    why = out_of_reach(12, 0.25, 0.6)
    assert why is not None and why.startswith("12 frames take the model 3000 ms here")


def test_a_model_that_fails_its_timing_is_named() -> None:
    class Failing:
        def detect(self, frames):
            raise RuntimeError("CUDA error: an illegal memory access")

    rt = SimpleNamespace(frame_shape=(48, 64), detector=Failing(), self_test=None)
    with pytest.raises(FodError, match=r"timing the model for the rate failed \(CUDA error"):
        auto_rate(rt, 8)
