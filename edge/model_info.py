"""What an exported detector declares about itself (ONNX metadata written by `fod export`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

from .errors import FodError

FORMAT = "pharma-fod/gfl-onnx/1"
# What the graph's `images` input takes. The uint8 layouts are cast, widened and normalised
# inside the graph, so the device's CPU writes no float tensor; float32_nchw is the first
# bundles' input (RGB 0-255), still read.
INPUT_LAYOUTS = ("uint8_nhwc", "uint8_nhw", "float32_nchw")
LEGACY_LAYOUT = "float32_nchw"  # graphs without an `input` metadata entry


@dataclass(frozen=True)
class ModelInfo:
    class_names: List[str]
    input_size: Tuple[int, int]  # W, H the graph was exported for
    level_counts: List[int]  # anchor points per pyramid level, in output order
    checkpoint_sha256: str  # the training checkpoint it came from
    arch: str
    input_layout: str = LEGACY_LAYOUT  # one of INPUT_LAYOUTS

    def to_metadata(self) -> Dict[str, str]:
        return {
            "format": FORMAT,
            "class_names": json.dumps(self.class_names, ensure_ascii=False),
            "input_size": f"{self.input_size[0]}x{self.input_size[1]}",
            "level_counts": json.dumps(self.level_counts),
            "checkpoint_sha256": self.checkpoint_sha256,
            "arch": self.arch,
            "input": self.input_layout,
        }

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], source: str) -> ModelInfo:
        if meta.get("format") != FORMAT:
            raise FodError(
                f"{source}: not a pharma-fod detector (metadata 'format' is {meta.get('format')!r})"
            )
        layout = meta.get("input", LEGACY_LAYOUT)
        if layout not in INPUT_LAYOUTS:
            raise FodError(f"{source}: unknown input layout {layout!r} (known: {INPUT_LAYOUTS})")
        try:
            w, h = (int(v) for v in meta["input_size"].split("x"))
            return cls(
                class_names=list(json.loads(meta["class_names"])),
                input_size=(w, h),
                level_counts=[int(v) for v in json.loads(meta["level_counts"])],
                checkpoint_sha256=meta["checkpoint_sha256"],
                arch=meta["arch"],
                input_layout=layout,
            )
        except (KeyError, ValueError) as e:
            raise FodError(f"{source}: metadata missing or malformed: {e}") from None


def _varint(data: bytes, i: int) -> Tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(data: bytes) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message's top-level fields."""
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i : i + 8], i + 8
        elif wire == 2:
            n, i = _varint(data, i)
            value, i = data[i : i + n], i + n
        elif wire == 5:
            value, i = data[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > len(data):
            raise ValueError("truncated field")
        yield number, wire, value


def read_onnx_metadata(data: bytes, source: str) -> Dict[str, str]:
    """ModelProto.metadata_props (field 14) of serialized ONNX bytes, without the onnx or
    onnxruntime packages (a TensorRT-only unit has neither)."""
    meta: Dict[str, str] = {}
    try:
        for number, wire, value in _fields(data):
            if number == 14 and wire == 2:
                entry = {n: v for n, w, v in _fields(value) if w == 2}
                meta[entry.get(1, b"").decode("utf-8")] = entry.get(2, b"").decode("utf-8")
    except (ValueError, UnicodeDecodeError) as e:
        raise FodError(f"{source}: not a readable ONNX model: {e}") from None
    return meta


def read_model_info(path: Path) -> ModelInfo:
    """What the ONNX file at `path` declares, from its metadata alone (no session)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise FodError(f"{path}: cannot read: {e.strerror}") from None
    return ModelInfo.from_metadata(read_onnx_metadata(data, str(path)), str(path))


# Ops only a quantized graph has: Q/DQ pairs (TensorRT's INT8) or integer kernels (ORT's).
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "ConvInteger",
        "MatMulInteger",
    }
)
_INT_TYPES = {2: "uint8", 3: "int8"}  # TensorProto.DataType of a zero point


def quantized_kind(data: bytes, source: str) -> str:
    """What serialized ONNX bytes hold, from the graph alone (no onnx package): "float"
    without a quantized op; else the activations' integer type, read off the zero points
    of its QuantizeLinear nodes - "int8" (symmetric Q/DQ, TensorRT's), "uint8" (ONNX
    Runtime's CPU model), "mixed", or "unknown" (no QuantizeLinear whose zero point is an
    initializer: weights alone quantized, or zero points made by other nodes)."""
    ops: List[str] = []
    zero_points: List[str] = []  # QuantizeLinear's third input; "" where it has none
    types: Dict[str, int] = {}  # initializer name -> data type
    try:
        for number, wire, graph in _fields(data):
            if number != 7 or wire != 2:  # ModelProto.graph
                continue
            for g_number, g_wire, value in _fields(graph):
                if g_wire != 2:
                    continue
                if g_number == 1:  # GraphProto.node: input = 1, op_type = 4
                    node = list(_fields(value))
                    op = next((v.decode() for n, w, v in node if n == 4 and w == 2), "")
                    ops.append(op)
                    if op == "QuantizeLinear":
                        inputs = [v.decode() for n, w, v in node if n == 1 and w == 2]
                        zero_points.append(inputs[2] if len(inputs) > 2 else "")
                elif g_number == 5:  # GraphProto.initializer: data_type = 2, name = 8
                    tensor = list(_fields(value))
                    name = next((v.decode() for n, w, v in tensor if n == 8 and w == 2), "")
                    types[name] = next((v for n, w, v in tensor if n == 2 and w == 0), 0)
    except (ValueError, UnicodeDecodeError) as e:
        raise FodError(f"{source}: not a readable ONNX model: {e}") from None
    if not any(op in QUANTIZED_OPS for op in ops):
        return "float"
    # A QuantizeLinear without a zero point quantizes to uint8 (the ONNX default).
    kinds = {_INT_TYPES.get(types.get(z, -1), "unknown") if z else "uint8" for z in zero_points}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else "unknown")
