"""INT8 Q/DQ model, the TensorRT cache format, the report, bundles and their signatures."""

from __future__ import annotations

import json
import logging
import shutil
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from calibration.quantize import _ORT_QUANTIZER, StreamingReader, chunk_size, quantize_qdq
from calibration.trt_cache import format_cache, hex_to_scale, parse_cache, scale_to_hex
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import open_bundle
from edge.detector import EdgeDetector
from edge.errors import FodError
from edge.model_info import quantized_kind
from edge.preprocess import letterbox
from fod.cli import main
from fod.deploy import calibrate_summary
from training.data.dataset import CocoDetection


def test_scale_hex_worked_by_hand() -> None:
    # amax 127.0 -> scale 1.0 = 0x3F800000; amax 2.54 -> scale 0.02 = 0x3CA3D70A (IEEE-754).
    assert scale_to_hex(127.0 / 127) == "3f800000"
    assert scale_to_hex(np.float32(2.54) / np.float32(127)) == "3ca3d70a"
    assert hex_to_scale("3ca3d70a") == pytest.approx(0.02, rel=1e-7)
    text = format_cache({"images": 1.0, "/model/Div_output_0": 0.02}, 8501)
    assert text.splitlines()[0] == "TRT-8501-EntropyCalibration2"
    assert "images: 3f800000" in text.splitlines()
    header, scales = parse_cache(text)
    assert header == "TRT-8501-EntropyCalibration2"
    assert scales["images"] == 1.0 and scales["/model/Div_output_0"] == pytest.approx(0.02)
    with pytest.raises(ValueError):
        parse_cache("not a cache")


def test_streaming_reader_chunks() -> None:
    frames = [np.full((4, 4, 3), k, np.uint8) for k in range(6)]
    reader = StreamingReader(lambda: iter(frames), len(frames))
    assert len(reader) == 6 and chunk_size(6) == 3 and chunk_size(300) == 4
    assert chunk_size(7) == 1 and chunk_size(11) == 1 and chunk_size(10, most=8) == 5
    got = []
    for start in range(0, 6, 4):
        reader.set_range(start, start + 4)
        while (x := reader.get_next()) is not None:
            assert x["images"].shape == (1, 3, 4, 4) and x["images"].dtype == np.float32
            got.append(int(x["images"][0, 0, 0, 0]))
    assert got == list(range(6))
    with pytest.raises(FodError):
        reader.set_range(2, 4)  # out of order


def test_qdq_model_is_explicit_symmetric_int8(calibrated: Path) -> None:
    m = onnx.load(str(calibrated / "model.int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    q = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert q and dq
    for n in q + dq:  # every zero point is 0: int8, or int32 for conv biases
        zp = inits[n.input[2]]
        assert not zp.any()
        assert zp.dtype == np.int8 or (zp.dtype == np.int32 and n.op_type == "DequantizeLinear")
    assert sum(inits[n.input[2]].dtype == np.int8 for n in q + dq) > 10
    conv_weights = [n for n in dq if n.input[0] in inits and inits[n.input[0]].ndim == 4]
    assert conv_weights and all(inits[n.input[1]].size > 1 for n in conv_weights)  # per-channel
    # The head's output convs stay float: their weights reach them without a DequantizeLinear.
    produced_by_dq = {o for n in dq for o in n.output}
    heads = [
        n
        for n in m.graph.node
        if n.op_type == "Conv" and ("gfl_cls" in n.name or "gfl_reg" in n.name)
    ]
    assert len(heads) == 10
    assert all(h.input[1] not in produced_by_dq for h in heads)
    assert all(n.op_type != "QuantizeLinear" for n in m.graph.node if "Softmax" in n.name)
    assert {p.key for p in m.metadata_props} >= {"format", "class_names", "level_counts"}


def test_int8_outputs_agree_with_fp32(exported, calibrated: Path, small_set: Path) -> None:
    """Stated tolerance on a random-weight model (a trained one agrees far better): scores
    correlate > 0.9 with mean |diff| < 0.1, median box corner shift < 3 px. A broken
    quantization (wrong scales, wrong zero points) lands near correlation 0."""
    data = CocoDetection(small_set)
    fp = OnnxRuntimeBackend(exported[3])
    q = OnnxRuntimeBackend(calibrated / "model.int8.onnx")
    for i in range(3):
        img, _ = letterbox(data[i].image, fp.info.input_size)
        fb, fs = fp.infer(img[None])
        qb, qs = q.infer(img[None])
        assert np.corrcoef(fs.ravel(), qs.ravel())[0, 1] > 0.9
        assert np.abs(fs - qs).mean() < 0.1
        assert np.median(np.abs(fb - qb)) < 3.0
    d_q = EdgeDetector(q, q.info).detect([data[0].image])[0]
    assert len(d_q) > 0


def test_cache_and_report(calibrated: Path) -> None:
    header, scales = parse_cache((calibrated / "calib.cache").read_text())
    assert header == "TRT-8501-EntropyCalibration2"
    assert len(scales) > 20 and all(s > 0 for s in scales.values())
    # minmax: the normalised input spans (0 - mean) / std .. (255 - mean) / std; the widest
    # channel is blue, (255 - 103.53) / 57.375 = 2.640 (salt noise reaches 255), scale = amax / 127.
    assert scales["/model/Div_output_0"] == pytest.approx((255 - 103.53) / 57.375 / 127, rel=1e-3)
    r = json.loads((calibrated / "report.json").read_text())
    assert set(r["metrics"]["fp32"]) == {"ap50", "ap", "ap_small", "ar", "ar_small"}
    assert r["latency_ms"]["int8"]["median_ms"] > 0 and r["speedup"] > 0
    assert any("gfl_cls" in n for n in r["float_nodes"])
    assert set(r["metrics"]) == set(r["latency_ms"]) == {"fp32", "int8", "int8_cpu"}
    assert r["speedup_cpu"] > 0 and set(r["drop_points_cpu"]) == set(r["drop_points"])
    cpu = onnx.load(str(calibrated / "model.int8-cpu.onnx"))
    zps = {i.name: numpy_helper.to_array(i) for i in cpu.graph.initializer}
    act_q = [n for n in cpu.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in zps]
    assert act_q and all(zps[n.input[2]].dtype == np.uint8 for n in act_q)  # uint8 activations
    cal = json.loads((calibrated / "calibration_set.json").read_text())["images"]
    assert len(cal) == 10 and cal[0]["seed"] == [3, 0] and "file" in cal[0]
    assert "| ap50 |" in (calibrated / "report.md").read_text()


def test_calibrate_summary_signs_the_change() -> None:
    # The report stores drops (FP32 - INT8); the console line shows the change, so a loss
    # of 1.84 points reads -1.84, not +1.84.
    r = {
        "metrics": {"fp32": {"ap50": 0.6447}, "int8": {"ap50": 0.6263}, "int8_cpu": {"ap50": 0.65}},
        "drop_points": {"ap50": 1.84},
        "drop_points_cpu": {"ap50": -0.53},
        "speedup": 0.81,
        "speedup_cpu": 2.29,
    }
    line = calibrate_summary(r, Path("cal"))
    assert "0.6447 -> 0.6263 (-1.84 points; INT8-CPU 0.6500, +0.53)" in line
    assert "INT8-CPU 2.29x, the Q/DQ model for TensorRT 0.81x" in line
    r["drop_points"]["ap50"] = -0.5
    assert "(+0.50 points;" in calibrate_summary(r, Path("cal"))
    r["drop_points"]["ap50"] = r["drop_points_cpu"]["ap50"] = 0.0  # no change: no sign
    assert "(+0.00 points; INT8-CPU 0.6500, +0.00)" in calibrate_summary(r, Path("cal"))


def test_calibrate_bad_input(exported, small_set: Path, tmp_path: Path, capsys) -> None:
    rc = main(
        [
            "calibrate",
            "--onnx",
            str(exported[3]),
            "--data",
            str(small_set),
            "--out",
            str(tmp_path / "c"),
            "--images",
            "500",
        ]
    )
    assert rc == 2 and "fewer than --images 500" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    rc = main(
        [
            "calibrate",
            "--onnx",
            str(exported[3]),
            "--data",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "c"),
        ]
    )
    assert rc == 2 and f"{tmp_path / 'empty'}: no images (.png" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_calibrate_names_every_unreadable_image_before_the_pass(
    exported, small_set: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two images of the set cut short (a copy interrupted): both are named, before the
    calibration pass has read any image, and nothing is written."""
    import calibration.quantize

    data = tmp_path / "set"
    shutil.copytree(small_set, data)
    files = sorted((data / "images").iterdir())
    for f in files[1:3]:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
    passes = []
    monkeypatch.setattr(calibration.quantize, "quantize_qdq", lambda *a, **k: passes.append(a))
    argv = ["calibrate", "--onnx", str(exported[3]), "--data", str(data), "--images", "4"]
    assert main([*argv, "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert f"2 of the {len(files)} images of {data} cannot be read" in err
    assert all(f"{f}: " in err for f in files[1:3]) and passes == []
    assert not (tmp_path / "c").exists()
    argv += ["--data", str(small_set), "--val", str(data)]  # the same set as --val only
    assert main([*argv, "--out", str(tmp_path / "c")]) == 2
    assert f"2 of the {len(files)} --val images cannot be read" in capsys.readouterr().err


def test_calibrate_on_the_lines_unlabelled_images(
    exported, calibrated: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    """A folder of images without labels (a line's recordings) calibrates as the COCO set
    of the same pixels does (the same seeded choice and noise, the same scales); the
    FP32-vs-INT8 metrics need a labelled --val."""
    line = tmp_path / "line"
    shutil.copytree(small_set / "images", line)
    argv = ["calibrate", "--onnx", str(exported[3]), "--data", str(line), "--images", "10"]
    argv += ["--method", "minmax", "--seed", "3", "--out", str(tmp_path / "cal")]  # as `calibrated`
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{line}: images without labels: pass a labelled --val" in err
    assert not (tmp_path / "cal").exists()
    assert main([*argv, "--val", str(small_set)]) == 0
    assert (tmp_path / "cal" / "calib.cache").read_text() == (
        calibrated / "calib.cache"
    ).read_text()
    for name in ("calibration_set.json", "report.json"):
        got, want = (json.loads((d / name).read_text()) for d in (tmp_path / "cal", calibrated))
        assert got.get("images") == want.get("images") and got.get("metrics") == want.get("metrics")


def _bundle(exported, calibrated: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "bundle",
            "make",
            "--onnx",
            str(exported[3]),
            "--int8",
            str(calibrated / "model.int8.onnx"),
            "--int8-cpu",
            str(calibrated / "model.int8-cpu.onnx"),
            "--cache",
            str(calibrated / "calib.cache"),
            "--report",
            str(calibrated / "report.json"),
            "--out",
            str(out),
            *extra,
        ]
    )


def test_bundle_round_trip_and_tamper(exported, calibrated: Path, tmp_path: Path, capsys) -> None:
    b = tmp_path / "b"
    assert _bundle(exported, calibrated, b) == 0
    assert main(["bundle", "verify", str(b)]) == 0
    # Readable by the line service's user: not mkstemp's 0600.
    assert b.stat().st_mode & 0o777 == 0o755
    assert (b / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert (calibrated / "model.int8.onnx").stat().st_mode & 0o777 == 0o644
    with open_bundle(b) as bundle:
        m = bundle.manifest
        assert m["classes"] == ["fiber", "particle", "glass_flake"] and m["input_size"] == [
            320,
            256,
        ]
        assert m["metrics"]["fp32"] and set(m["thresholds"]) >= {"score_threshold", "nms_iou"}
        assert bundle.file("int8").name == "model.int8.onnx"
    capsys.readouterr()
    for name in sorted(p.name for p in b.iterdir() if p.name != "manifest.json"):
        bad = tmp_path / f"bad-{name}"
        shutil.copytree(b, bad)
        data = bytearray((bad / name).read_bytes())
        data[len(data) // 2] ^= 0x01  # one flipped bit
        (bad / name).write_bytes(bytes(data))
        assert main(["bundle", "verify", str(bad)]) == 2
        err = capsys.readouterr().err
        assert f"{name}: sha256 does not match" in err
    missing = tmp_path / "missing"
    shutil.copytree(b, missing)
    (missing / "calib.cache").unlink()
    assert main(["bundle", "verify", str(missing)]) == 2
    assert "calib.cache: listed in the manifest but missing" in capsys.readouterr().err
    (missing / "calib.cache").write_text("x")
    (missing / "notes.txt").write_text("x")
    with pytest.raises(FodError, match=r"notes\.txt: extra file"), open_bundle(missing):
        pass


def _activation_zero_points(path: Path) -> set:
    """The data types of a graph's QuantizeLinear zero points, read with the onnx package."""
    m = onnx.load(str(path))
    types = {i.name: i.data_type for i in m.graph.initializer}
    return {types[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"}


def test_each_model_role_takes_its_own_kind(exported, calibrated: Path, tmp_path, capsys):
    """`quantized_kind` reads what `fod calibrate` wrote as the onnx package does, and
    `fod bundle make` refuses a model given for another role (the INT8 models swapped, or
    an INT8 one as the FP32), naming it, before anything is written. Before, a swapped pair
    was bundled as given: the unit's TensorRT path would have built from the uint8 model,
    its ONNX Runtime path run the symmetric one."""
    fp32, int8, cpu = (
        exported[3],
        calibrated / "model.int8.onnx",
        calibrated / "model.int8-cpu.onnx",
    )
    assert _activation_zero_points(int8) == {onnx.TensorProto.INT8}
    assert _activation_zero_points(cpu) == {onnx.TensorProto.UINT8}
    kinds = [quantized_kind(p.read_bytes(), str(p)) for p in (fp32, int8, cpu)]
    assert kinds == ["float", "int8", "uint8"]
    out = tmp_path / "b"
    for argv, named, why in (
        (["--onnx", fp32, "--int8", cpu, "--int8-cpu", int8], cpu, "given as --int8, which"),
        (["--onnx", int8], int8, "given as --onnx, which takes a float model"),
    ):
        assert main(["bundle", "make", *map(str, argv), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"{named}: {why}" in err, err
        assert not out.exists()


def test_signed_bundle_tar(exported, calibrated: Path, tmp_path: Path, capsys) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    key, pub = tmp_path / "keys" / "fod_signing.key", tmp_path / "keys" / "fod_signing.pub"
    assert _bundle(exported, calibrated, tmp_path / "s", "--sign", str(key), "--tar") == 0
    tar = tmp_path / "s.tar.gz"
    assert main(["bundle", "verify", str(tar), "--public-key", str(pub)]) == 0
    # Unsigned bundle on a unit that holds a key: refused.
    assert _bundle(exported, calibrated, tmp_path / "u") == 0
    assert main(["bundle", "verify", str(tmp_path / "u"), "--public-key", str(pub)]) == 2
    assert "unsigned bundle" in capsys.readouterr().err
    # Manifest rewritten with matching hashes (an attacker's move): the signature catches it.
    assert _bundle(exported, calibrated, tmp_path / "s2", "--sign", str(key)) == 0
    man = tmp_path / "s2" / "manifest.json"
    m = json.loads(man.read_text())
    m["thresholds"]["score_threshold"] = 0.99
    man.write_text(json.dumps(m, indent=1))
    assert main(["bundle", "verify", str(tmp_path / "s2")]) == 0  # hashes alone still pass
    assert main(["bundle", "verify", str(tmp_path / "s2"), "--public-key", str(pub)]) == 2
    assert "signature does not match" in capsys.readouterr().err
    # Another key pair: refused too.
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    rc = main(
        ["bundle", "verify", str(tar), "--public-key", str(tmp_path / "other" / "fod_signing.pub")]
    )
    assert rc == 2
    assert struct.calcsize(">f") == 4


def test_cache_reader_against_writer_and_names_in_fp32(exported, calibrated: Path) -> None:
    """Every tensor the TensorRT cache names exists in the FP32 graph (an implicit-INT8
    build on the unit looks its ranges up by these names), and read == written."""
    from calibration.trt_cache import activation_scales, parse_cache

    header, scales = parse_cache((calibrated / "calib.cache").read_text())
    assert header.startswith("TRT-") and header.endswith("-EntropyCalibration2")
    want = activation_scales(onnx.load(str(calibrated / "model.int8.onnx")))
    assert scales.keys() == want.keys() and len(scales) > 10
    for name, s in want.items():
        assert scales[name] == pytest.approx(s, rel=1e-7)
    fp32 = onnx.load(str(exported[3])).graph
    tensors = {t for n in fp32.node for t in (*n.input, *n.output)} | {i.name for i in fp32.input}
    assert set(scales) <= tensors, sorted(set(scales) - tensors)[:5]


def test_the_quantizers_own_log_is_summed_up_unless_debugging(
    exported, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ONNX Runtime's quantizer logs some 80 lines of its inner workings a model; `fod
    calibrate` shows them with -v only, and its warnings as one counted line."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (256, 320, 3), np.uint8) for _ in range(2)]

    def quantize(level: int, out: str) -> list:
        caplog.clear()
        caplog.set_level(level)
        reader = StreamingReader(lambda: iter(frames), 2, False, "uint8_nhwc")
        quantize_qdq(exported[3], tmp_path / out, reader, "minmax")
        assert onnx.load(str(tmp_path / out)).graph.node  # the model is written either way
        return [r for r in caplog.records if r.pathname.startswith(_ORT_QUANTIZER)]

    every = quantize(logging.DEBUG, "debug.onnx")
    assert len(every) > 10  # what the pinned ONNX Runtime says of this model
    warned = sum(r.levelno == logging.WARNING for r in every)
    assert quantize(logging.INFO, "info.onnx") == []
    summary = [r.getMessage() for r in caplog.records if "quantizer warned" in r.getMessage()]
    assert len(summary) == (1 if warned else 0)
    assert all(m.startswith(f"ONNX Runtime's quantizer warned {warned} time(s)") for m in summary)
