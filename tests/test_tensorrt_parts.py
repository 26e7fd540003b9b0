"""The TensorRT path's pure parts, without TensorRT: engine cache key and sidecar, the
build plan per TensorRT version, the engine I/O contract, the CUDA call checker, and
reading ONNX metadata without onnx."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge import engine_cache
from edge.backends.cuda import CudaError, checked
from edge.backends.tensorrt_backend import IoTensor, check_io
from edge.backends.trt_build import parse_version, plan
from edge.engine_cache import EngineKey, EngineMismatch
from edge.errors import FodError
from edge.model_info import read_onnx_metadata

KEY = EngineKey("a" * 64, "8.5.2.2", "Orin", -1, "int8")
ALL = ("fp32", "int8", "int8_cpu", "cache")


def test_engine_cache_round_trip(tmp_path: Path) -> None:
    assert engine_cache.lookup(tmp_path, KEY) is None
    path = engine_cache.store(tmp_path, KEY, b"engine bytes", {"max_batch": 4})
    assert engine_cache.lookup(tmp_path, KEY) == path
    meta = engine_cache.check(path, engine_cache.paths(tmp_path, KEY)[1], KEY)
    assert meta["max_batch"] == 4 and meta["engine_bytes"] == len(b"engine bytes")
    assert meta["key"]["trt_version"] == "8.5.2.2"


@pytest.mark.parametrize(
    "field,value",
    [
        ("trt_version", "10.3.0.30"),  # JetPack upgraded under the engine
        ("gpu", "Xavier"),  # engine copied from another unit
        ("model_sha256", "b" * 64),  # another bundle
        ("dla_core", 0),
        ("precision", "fp16"),
    ],
)
def test_a_changed_key_means_rebuild(tmp_path: Path, field: str, value: object) -> None:
    engine_cache.store(tmp_path, KEY, b"engine", {})
    other = EngineKey(**{**KEY.__dict__, field: value})
    assert other.stem() != KEY.stem()
    assert engine_cache.lookup(tmp_path, other) is None  # another key: not found, so rebuilt
    # An engine whose sidecar says another TensorRT/GPU is refused by name, even if renamed.
    eng, side = engine_cache.paths(tmp_path, KEY)
    with pytest.raises(EngineMismatch, match=f"built for {field}"):
        engine_cache.check(eng, side, other)


def test_altered_engine_or_sidecar_refused(tmp_path: Path) -> None:
    eng = engine_cache.store(tmp_path, KEY, b"engine", {})
    side = engine_cache.paths(tmp_path, KEY)[1]
    eng.write_bytes(b"engine, cut")
    with pytest.raises(EngineMismatch, match="sha256 differs"):
        engine_cache.check(eng, side, KEY)
    assert engine_cache.lookup(tmp_path, KEY) is None
    side.write_text("{not json")
    with pytest.raises(EngineMismatch, match="unreadable sidecar"):
        engine_cache.check(eng, side, KEY)
    side.write_text(json.dumps({"format": "other"}))
    with pytest.raises(EngineMismatch, match="not a pharma-fod engine sidecar"):
        engine_cache.check(eng, side, KEY)


def test_version_strings() -> None:
    assert parse_version("8.5.2.2") == (8, 5, 2)
    assert parse_version("10.3") == (10, 3, 0)
    with pytest.raises(FodError, match="cannot read TensorRT version"):
        parse_version("ten")


@pytest.mark.parametrize(
    "version,precision,role,net,flags",
    [
        ("8.5.2.2", "int8", "int8", ("EXPLICIT_BATCH",), ("INT8",)),  # JetPack 5.1
        ("8.6.2.3", "best", "int8", ("EXPLICIT_BATCH",), ("INT8", "FP16")),  # JetPack 6.0
        ("8.6.2.3", "fp16", "fp32", ("EXPLICIT_BATCH",), ("FP16",)),
        ("10.3.0.30", "int8", "int8", (), ("INT8",)),  # JetPack 6.1/6.2
        ("10.3.0.30", "best", "int8", (), ("INT8", "FP16")),
        ("10.3.0.30", "fp16", "fp32", (), ("FP16",)),
        ("11.0.0.1", "int8", "int8", (), ()),  # strongly typed: no precision flags
        ("11.0.0.1", "best", "int8", (), ()),
    ],
)
def test_build_plan_by_version(version, precision, role, net, flags) -> None:
    p = plan(version, precision, ALL)
    assert (p.model_role, p.network_flags, p.builder_flags, p.implicit_cache) == (
        role,
        net,
        flags,
        False,
    )


def test_build_plan_limits() -> None:
    with pytest.raises(FodError, match=r"8\.5\.1 or newer"):
        plan("8.4.1.5", "int8", ALL)
    with pytest.raises(FodError, match="strongly typed"):
        plan("11.0.0.1", "fp16", ALL)
    with pytest.raises(FodError, match="--precision must be one of"):
        plan("10.3.0", "int4", ALL)
    # Only TensorRT 8 can build INT8 from the FP32 model and calib.cache (implicit INT8).
    p = plan("8.5.2", "int8", ("fp32", "cache"))
    assert (p.model_role, p.implicit_cache, p.builder_flags) == ("fp32", True, ("INT8",))
    with pytest.raises(FodError, match="no INT8 model for TensorRT"):
        plan("10.3.0", "int8", ("fp32", "cache"))
    with pytest.raises(FodError, match="no INT8 model for TensorRT"):
        plan("8.6.2", "int8", ("int8_cpu",))  # the demo bundle: ONNX Runtime's model only


def test_engine_io_contract() -> None:
    u8 = np.dtype(np.uint8)
    f32 = np.dtype(np.float32)
    good = [
        IoTensor("images", True, u8, (800, 1280)),
        IoTensor("boxes", False, f32, (21000, 4)),
        IoTensor("scores", False, f32, (21000, 3)),
    ]
    check_io(good)
    with pytest.raises(FodError, match="expected"):
        check_io(good[:2])
    with pytest.raises(FodError, match="only the batch axis"):
        check_io([good[0], good[1], IoTensor("scores", False, f32, (-1, 3))])


def test_cuda_checker_names_the_call() -> None:
    class FakeDriverError(Exception):
        pass

    FakeDriverError.__module__ = "pycuda._driver"  # what pycuda's errors carry

    def boom() -> None:
        raise FakeDriverError("out of memory")

    with pytest.raises(CudaError, match=r"cuMemAlloc\(1024\): FakeDriverError: out of memory"):
        checked("cuMemAlloc(1024)", boom)
    with pytest.raises(CudaError, match="execute_async_v3: returned False"):
        checked("execute_async_v3", lambda: False)
    with pytest.raises(ZeroDivisionError):  # our own bug keeps its traceback
        checked("x", lambda: 1 / 0)
    assert checked("ok", lambda: 3) == 3


def test_onnx_metadata_without_onnx() -> None:
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort

    data = (Path(__file__).parents[1] / "models/demo/model.int8-cpu.onnx").read_bytes()
    want = ort.InferenceSession(data).get_modelmeta().custom_metadata_map
    assert read_onnx_metadata(data, "demo") == want and want["format"].startswith("pharma-fod")
    m = onnx.load_from_string(data)
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, {"ä": "x" * 300, "input": "uint8_nhw"})  # long, non-ASCII
    assert read_onnx_metadata(m.SerializeToString(), "m") == {"ä": "x" * 300, "input": "uint8_nhw"}
    with pytest.raises(FodError, match="truncated: not a readable ONNX model"):
        read_onnx_metadata(data[:1001], "truncated")
