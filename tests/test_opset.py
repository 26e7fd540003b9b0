"""ONNX opsets: INT8 for TensorRT is per-channel Q/DQ, whose `axis` came in opset 13, so
`fod export` writes nothing older and `fod calibrate` names an older model before its
calibration pass (before: a pass over every image, then ONNX Runtime refusing the INT8
model it wrote; opset 9 a version-converter traceback)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

import calibration.quantize
from calibration.quantize import model_opset
from fod.cli import main


def _export(ckpt: Path, out: Path, opset: str) -> int:
    argv = ["export", "--weights", str(ckpt), "--out", str(out), "--size", "320x256"]
    return main([*argv, "--opset", opset])


@pytest.mark.parametrize(
    "opset, problem",
    [
        ("11", "--opset 11: fod calibrate's per-channel INT8 (Q/DQ, as TensorRT takes it) needs"),
        ("99", "--opset 99: this torch cannot export it (Unsupported onnx_opset_version: 99)"),
    ],
)
def test_export_refuses_an_opset_int8_cannot_take(exported, tmp_path, capsys, opset, problem):
    out = tmp_path / "m.onnx"
    assert _export(exported[2], out, opset) == 2
    assert problem in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_calibrate_names_an_old_opset_before_its_pass(
    exported, small_set: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    old = tmp_path / "m11.onnx"
    with monkeypatch.context() as m:  # as fod export wrote it before it refused opset 11
        m.setattr(calibration.quantize, "QDQ_MIN_OPSET", 11)
        assert _export(exported[2], old, "11") == 0
    assert model_opset(onnx.load(str(old))) == 11
    capsys.readouterr()
    out = tmp_path / "int8"

    def no_pass(*args, **kwargs):
        raise AssertionError("the calibration pass ran")

    monkeypatch.setattr(calibration.quantize, "quantize_qdq", no_pass)
    argv = ["calibrate", "--onnx", str(old), "--data", str(small_set), "--out", str(out)]
    assert main([*argv, "--images", "4"]) == 2
    err = capsys.readouterr().err
    assert f"{old}: ONNX opset 11: per-channel INT8" in err and "fod export" in err
    assert not out.exists()


def test_calibrate_names_a_model_quantized_already_before_its_pass(
    small_set: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """A bundle's INT8 model given for the FP32 one: before, the whole pass ran, then ONNX
    Runtime refused the graph the quantizer wrote, named by a temporary path."""
    int8 = Path(__file__).resolve().parents[1] / "models" / "demo" / "model.int8-cpu.onnx"

    def no_pass(*args, **kwargs):
        raise AssertionError("the calibration pass ran")

    monkeypatch.setattr(calibration.quantize, "quantize_qdq", no_pass)
    out = tmp_path / "int8"
    argv = ["calibrate", "--onnx", str(int8), "--data", str(small_set), "--out", str(out)]
    assert main([*argv, "--images", "4"]) == 2
    err = capsys.readouterr().err
    assert f"{int8}: already quantized (" in err and "FP32 ONNX that `fod export` wrote" in err
    assert not out.exists()
