"""The one timing module, `fod bench` end to end on ONNX Runtime, `fod check` reporting what is
wrong on a unit, the device record, and `fod bundle make|verify`."""

from __future__ import annotations

import json
import socket
from importlib import metadata
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np
import pytest

from edge.bench import BenchConfig, run_bench, synthetic_frames
from edge.device_info import clocks_locked, device_info, l4t_release, unit
from edge.errors import FodError
from edge.model_info import ModelInfo
from edge.preflight import check_clock
from edge.software import code_digest
from edge.timing import StageTimer, repeat, summarize
from fod.cli import main

from .quiet import quiet_outputs


def test_summarize_known_times() -> None:
    s = summarize([float(v) for v in range(1, 101)], items_per_run=2)
    assert (s.runs, s.min_ms, s.max_ms, s.median_ms, s.mean_ms) == (100, 1.0, 100.0, 50.5, 50.5)
    # numpy's linear percentiles, as trtexec-style reports give them
    assert (s.p90_ms, s.p95_ms, s.p99_ms) == pytest.approx((90.1, 95.05, 99.01))
    assert s.throughput_per_s == pytest.approx(2 * 1000 / 50.5) and s.outliers == 0
    assert summarize([1.0, 1.1, 0.9, 1.0, 1.05, 40.0]).outliers == 1
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_repeat_and_stage_timer() -> None:
    calls: List[int] = []
    times = repeat(lambda: calls.append(1), warmup=3, min_runs=5)
    assert len(calls) == 8 and len(times) == 5 and all(t >= 0 for t in times)
    assert len(repeat(lambda: None, warmup=0, min_runs=1, min_seconds=0.05, max_runs=3)) <= 3
    t = StageTimer()
    with t("a"):
        pass
    with pytest.raises(KeyError), t("b"):  # a failed run is not a time
        raise KeyError
    t.add("a", 2.0)
    assert list(t.times) == ["a"] and len(t.times["a"]) == 2


class ScriptedBackend:
    """A backend whose sub-stage times are given: the bench must summarise exactly them."""

    def __init__(self, info: ModelInfo, computes: List[float]) -> None:
        self.info, self.computes, self.last_times = info, iter(computes), {}
        self.a = sum(info.level_counts)

    def prepare(self, images: np.ndarray) -> np.ndarray:
        return images

    def run(self, x: np.ndarray):
        self.last_times = {"compute": next(self.computes)}
        n = len(x)
        return quiet_outputs(n, self.a, 3)

    def infer(self, images: np.ndarray):
        return self.run(images)

    def close(self) -> None:
        pass


def test_bench_statistics_on_a_known_list() -> None:
    info = ModelInfo(["a", "b", "c"], (64, 32), [8 * 4, 4 * 2], "-", "x", "uint8_nhw")
    computes = [100.0, 100.0] + [float(v) for v in range(1, 25)]  # 2 warm-up, 24 timed
    cfg = BenchConfig(batch=2, iters=24, warmup=2, frames=12)
    res = run_bench(ScriptedBackend(info, computes), info, synthetic_frames((64, 32), True), cfg)
    assert res["iterations"] == 24 and len(res["end_to_end_ms"]) == 24
    assert res["stages"]["compute"] == summarize(computes[2:], 2).to_dict()  # warm-up dropped
    assert res["stages"]["decision"]["runs"] == 24 * 2 // 12  # one per container of 12 frames
    assert set(res["stages"]) == {
        "read",
        "preprocess",
        "compute",
        "inference",
        "postprocess",
        "decision",
        "end_to_end",
        "edge_overhead",
    }


def test_fod_bench_onnxruntime_end_to_end(bundle, exported, tmp_path, capsys) -> None:
    float_onnx = tmp_path / "f.onnx"
    ckpt = exported[2]
    assert (
        main(
            [
                "export",
                "--weights",
                str(ckpt),
                "--out",
                str(float_onnx),
                "--size",
                "320x256",
                "--input",
                "float",
            ]
        )
        == 0
    )
    b2 = tmp_path / "b2"
    assert main(["bundle", "make", "--onnx", str(float_onnx), "--out", str(b2), "--name", "f"]) == 0
    capsys.readouterr()
    out = tmp_path / "bench"
    args = ["bench", "--bundle", str(bundle), "--iters", "6", "--warmup", "1", "--batch", "2"]
    rc = main([*args, "--compare", f"onnxruntime={b2}", "--mono", "--out", str(out), "--json"])
    assert rc == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["model"]["input"] for r in runs] == ["uint8_nhwc", "float32_nchw"]
    for r in runs:
        assert r["backend"] == "onnxruntime" and r["iterations"] == 6 and r["batch"] == 2
        st = r["stages"]
        assert {"read", "preprocess", "compute", "postprocess", "decision", "end_to_end"} <= set(st)
        assert st["end_to_end"]["median_ms"] >= st["compute"]["median_ms"] > 0
        assert r["fps"] == pytest.approx(st["end_to_end"]["throughput_per_s"], abs=1e-3)
        assert r["device"]["board"] and "warnings" in r["device"]
    assert json.loads((out / "bench.json").read_text())["runs"][0]["label"] == runs[0]["label"]
    png = cv2.imread(str(out / "latency_hist.png"))
    assert png is not None and png.shape == (540, 960, 3) and (png < 250).mean() > 0.02
    # The human table names every stage.
    assert main([*args, "--iters", "2"]) == 0
    text = capsys.readouterr().out
    assert "frames/s" in text and "postprocess" in text and "p99" in text
    # Each row says how many times its stage ran (2 iterations of a batch of 2 frames; the
    # decision, where containers complete, once a container).
    rows = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.startswith("  ")}
    assert rows["stage"][-1] == "runs" and rows["end_to_end"][-1] == "2"


def _check_config(tmp_path: Path, bundle: Path, **audit) -> Path:
    cfg = tmp_path / "line.toml"
    audit_lines = "\n".join(f"{k} = {v}" for k, v in audit.items())
    cfg.write_text(
        f"""
[camera]
source = "file:{tmp_path / "no-such-camera.avi"}"
[model]
bundle = "{bundle}"
allow_unsigned = true
[gpio]
pin_factory = "mock"
delay_ms = 5000  # the timing check passes on a slow machine too
[audit]
folder = "{tmp_path / "audit"}"
{audit_lines}
[metrics]
port = 0
"""
    )
    return cfg


def test_fod_check_reports_missing_camera_and_full_audit(bundle, tmp_path, capsys) -> None:
    cfg = _check_config(tmp_path, bundle, min_free_bytes=10**18)  # no disk has an exabyte free
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    status: Dict[str, str] = {c["name"]: c["status"] for c in s["checks"]}
    assert s["ok"] is False and set(s["failures"]) == {"camera", "audit"}, s
    assert status["bundle"] == "warn"  # unsigned: allowed, flagged
    assert status["model"] == "warn"  # loads; no reference frames to check its sight on
    detail = {c["name"]: c["detail"] for c in s["checks"]}
    assert "no-such-camera.avi" in detail["camera"] and "min_free_bytes" in detail["audit"]
    assert main(["check", "--config", str(cfg)]) == 1
    text = capsys.readouterr().out
    assert "FAIL  camera" in text and "NOT ready: camera, audit" in text


def test_fod_check_fails_an_audit_signing_key_the_runtime_cannot_read(tmp_path: Path) -> None:
    import dataclasses

    from edge.config import LineConfig
    from edge.preflight import FAIL, OK, _run, check_audit
    from edge.signing import generate_keypair

    key, _ = generate_keypair(tmp_path / "keys", "audit")
    base = LineConfig()
    for path, status, said in (
        (key, OK, f"checkpoints signed with {key}"),
        (tmp_path / "keys" / "audit.pub", FAIL, "audit.pub: not a readable PEM private key"),
        (tmp_path / "gone.key", FAIL, "gone.key: not a readable PEM private key"),
    ):
        audit = dataclasses.replace(
            base.audit, folder=tmp_path / "audit", min_free_bytes=0, signing_key=str(path)
        )
        c = _run("audit", lambda: check_audit(dataclasses.replace(base, audit=audit)))
        assert c.status == status and said in c.detail, c


def test_fod_check_passes_with_a_camera_that_delivers(bundle, tmp_path, capsys) -> None:
    video = tmp_path / "no-such-camera.avi"  # the config's camera, now present
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 25, (320, 256))
    texture = np.random.default_rng(0).integers(0, 60, (256, 320, 3), dtype=np.uint8)
    for i in range(14):  # frames the line would take: neither uniform nor repeated
        w.write(texture + np.uint8(100 + i))
    w.release()
    cfg = _check_config(tmp_path, bundle, min_free_bytes=0)
    rc = main(["check", "--config", str(cfg), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert rc == 0 and s["ok"], s
    checks = {c["name"]: c for c in s["checks"]}
    assert checks["camera"]["status"] == "ok" and checks["timing"]["status"] == "ok"
    # What `fod run` would put on record as it starts: the versions and the code's hash.
    assert checks["software"]["detail"].endswith(f"edge code sha256 {code_digest()}")
    assert f"numpy {np.__version__}, opencv {cv2.__version__}, " in checks["software"]["detail"]
    # Against the fleet's validated versions: a unit whose numpy moved is not ready.
    pins = tmp_path / "fleet-constraints.txt"
    gpiozero = f"gpiozero=={metadata.version('gpiozero')}\n"
    pins.write_text(f"# validated 2026-12-01\nnumpy=={np.__version__}\n{gpiozero}")
    assert main(["check", "--config", str(cfg), "--constraints", str(pins)]) == 0
    assert f"all 2 as pinned by {pins}" in capsys.readouterr().out
    pins.write_text(f"numpy==1.21.0\n{gpiozero}")
    assert main(["check", "--config", str(cfg), "--constraints", str(pins), "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    assert s["failures"] == ["software"], s
    assert s["checks"][-1]["detail"] == (
        f"not as pinned by {pins}: numpy {np.__version__} (pinned 1.21.0)"
    )
    # The capture of a container's 12 frames, measured, counts in the timing.
    assert checks["camera"]["ms"] > 0
    assert f"+ capture {checks['camera']['ms']:.0f} ms" in checks["timing"]["detail"]


def test_clock_check_fails_an_unsynchronised_wall_clock() -> None:
    assert check_clock(synced=False).status == "fail"
    assert check_clock(synced=True).status == "ok"


def test_device_record_from_a_jetson_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nv_tegra_release").write_text(
        "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n"
    )
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("NVIDIA Jetson AGX Orin Developer Kit\0")
    for i, (lo, hi) in enumerate([(2201600, 2201600), (729600, 2201600)]):
        d = tmp_path / f"sys/devices/system/cpu/cpu{i}/cpufreq"
        d.mkdir(parents=True)
        (d / "scaling_min_freq").write_text(f"{lo}\n")
        (d / "scaling_max_freq").write_text(f"{hi}\n")
    assert l4t_release(tmp_path) == "R35.4.1"
    assert clocks_locked(tmp_path) is False  # cpu1 still scales
    rec = device_info("Orin", tmp_path)
    assert (rec["board"], rec["jetpack"], rec["gpu"]) == (
        "NVIDIA Jetson AGX Orin Developer Kit",
        "5",
        "Orin",
    )
    assert any("jetson_clocks" in w for w in rec["warnings"])
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq").write_text("2201600\n")
    assert clocks_locked(tmp_path) is True and device_info(None, tmp_path)["warnings"] == []
    assert clocks_locked(tmp_path / "nothing") is None
    host = socket.gethostname()
    assert unit(tmp_path) == f"{host} (NVIDIA Jetson AGX Orin Developer Kit, L4T R35.4.1)"
    sw = rec["software"]
    assert (sw["numpy"], sw["opencv"]) == (np.__version__, cv2.__version__)


def test_bundle_make_and_verify_subcommands(bundle, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["bundle", "verify", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "manifest" in text and "--public-key" in text and "B" in text
    with pytest.raises(SystemExit) as e:
        main(["bundle"])  # a sub-command is required
    assert e.value.code == 2
    assert main(["bundle", "verify", str(bundle)]) == 0
    assert "files match the manifest" in capsys.readouterr().out


def test_fod_bench_torch_architectures_side_by_side(capsys) -> None:
    """The paper's FPS comparison in one run: architectures by name with random weights
    (FP16 with CUDA; here FP32 on the CPU, at a small size)."""
    args = ["bench", "--backend", "torch", "--bundle", "gfl-r18", "--size", "128x96"]
    rc = main(
        [*args, "--compare", "torch=gfl-r18-carafe", "--iters", "2", "--warmup", "0", "--json"]
    )
    assert rc == 0
    runs = json.loads(capsys.readouterr().out)["runs"]
    assert [r["model"]["arch"] for r in runs] == ["gfl-r18", "gfl-r18-carafe"]
    for r in runs:
        assert r["precision"] == "fp32" and r["model"]["compiled"] == "eager"
        assert {"h2d", "compute", "d2h"} <= set(r["stages"]) and r["fps"] > 0


def test_fod_check_tensorrt_without_tensorrt_is_a_failed_check(bundle, tmp_path, capsys) -> None:
    cfg = _check_config(tmp_path, bundle, min_free_bytes=0)
    text = cfg.read_text().replace(
        "allow_unsigned = true", 'allow_unsigned = true\nbackend = "tensorrt"'
    )
    cfg.write_text(text)
    assert main(["check", "--config", str(cfg), "--json"]) == 1
    s = json.loads(capsys.readouterr().out)
    model = next(c for c in s["checks"] if c["name"] == "model")
    assert model["status"] == "fail" and "tensorrt" in model["detail"], model


def test_bench_with_tiles_times_every_tile_call_of_a_frame() -> None:
    """With 2x2 tiles each frame is four model calls, as on the line: a frame's compute is
    the sum of its four scripted times; tiles that cannot cut the frames are refused."""
    info = ModelInfo(["a", "b", "c"], (64, 32), [8 * 4, 4 * 2], "-", "x", "uint8_nhw")
    computes = [float(v) for v in range(1, 4 * (1 + 6) + 1)]  # 1 warm-up + 6 timed frames
    cfg = BenchConfig(batch=1, iters=6, warmup=1, frames=3, tiles=(2, 2), tile_overlap=4)
    res = run_bench(ScriptedBackend(info, computes), info, synthetic_frames((128, 64), True), cfg)
    per_frame = [sum(computes[i : i + 4]) for i in range(4, len(computes), 4)]
    assert res["stages"]["compute"] == summarize(per_frame, 1).to_dict()
    assert res["tiles"] == "2x2" and res["frame_size"] == [128, 64]
    assert res["stages"]["decision"]["runs"] == 6 // 3
    too_wide = BenchConfig(iters=1, warmup=0, tiles=(2, 1), tile_overlap=100)
    with pytest.raises(FodError, match=r"tiles 2x1 for 64x32 frames"):
        small = synthetic_frames((64, 32), True)
        run_bench(ScriptedBackend(info, [1.0] * 8), info, small, too_wide)


def test_bench_with_mirror_times_both_views_of_a_frame() -> None:
    """With `mirror` each frame is two model calls (the frame, then its mirror), with
    tiles four per view: a frame's compute is the sum of its calls' scripted times."""
    info = ModelInfo(["a", "b", "c"], (64, 32), [8 * 4, 4 * 2], "-", "x", "uint8_nhw")
    for tiles, calls in (((1, 1), 2), ((2, 2), 8)):
        computes = [float(v) for v in range(1, calls * (1 + 6) + 1)]  # 1 warm-up + 6 frames
        cfg = BenchConfig(batch=1, iters=6, warmup=1, frames=3, tiles=tiles, mirror=True)
        frames = synthetic_frames((128, 64), True)
        res = run_bench(ScriptedBackend(info, computes), info, frames, cfg)
        per_frame = [sum(computes[i : i + calls]) for i in range(calls, len(computes), calls)]
        assert res["stages"]["compute"] == summarize(per_frame, 1).to_dict()
        assert res["mirror"] is True


def test_fod_bench_mirror(bundle, tmp_path, capsys) -> None:
    args = ["bench", "--bundle", str(bundle), "--iters", "2", "--warmup", "1", "--mirror"]
    assert main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["mirror"] is True
    assert main(args) == 0
    assert ", mirrored too]" in capsys.readouterr().out
    assert main([*args, "--backend", "torch", "--bundle", "gfl-r18"]) != 0
    assert "--mirror time the edge path" in capsys.readouterr().err


def test_fod_bench_tiles_on_camera_sized_frames(bundle, tmp_path, capsys) -> None:
    args = ["bench", "--bundle", str(bundle), "--iters", "2", "--warmup", "1"]
    assert main([*args, "--tiles", "2x2", "--frame-size", "640x512", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["tiles"] == "2x2" and run["frame_size"] == [640, 512], run
    assert main([*args, "--tiles", "2x2", "--frame-size", "640x512"]) == 0
    assert "frames 640x512 in 2x2 tiles]" in capsys.readouterr().out
    whole = main([*args, "--json"])
    assert whole == 0 and json.loads(capsys.readouterr().out)["runs"][0]["frame_size"] == [320, 256]
    with pytest.raises(SystemExit):  # argparse: a grid out of range
        main([*args, "--tiles", "9x1"])
    assert "each 1-8" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # gaps between the tiles: a config no line can load
        main([*args, "--tiles", "2x2", "--frame-size", "640x512", "--tile-overlap", "-8"])
    assert "--tile-overlap: expected an integer >= 0, got -8" in capsys.readouterr().err
    assert main([*args, "--frame-size", "640x512", "--source", "file:x.avi"]) != 0
    assert "--frame-size is for synthetic frames" in capsys.readouterr().err


def test_fod_bench_reads_a_video_and_says_when_it_runs_out(bundle, tmp_path, capsys) -> None:
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 256))
    for k in range(3):
        writer.write(np.full((256, 320, 3), 60 * k, np.uint8))
    writer.release()
    args = ["bench", "--bundle", str(bundle), "--source", f"file:{video}", "--warmup", "1"]
    assert main([*args, "--iters", "2", "--json"]) == 0  # 3 frames: 1 + 2 iterations
    run = json.loads(capsys.readouterr().out)["runs"][0]
    assert run["iterations"] == 2 and run["frame_size"] == [320, 256]
    assert run["stages"]["read"]["runs"] == 2
    assert main([*args, "--iters", "5"]) == 2
    err = capsys.readouterr().err
    assert "line.avi: ran out of frames after 3 of at least 6 iterations of 1 frame(s)" in err
