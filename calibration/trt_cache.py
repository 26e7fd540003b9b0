"""TensorRT INT8 calibration cache, written from the same calibration as the Q/DQ model.

For JetPack 5 units (TensorRT 8.5) that build with implicit INT8 and a calibrator
reading a cache. Format (TensorRT's own): a header `TRT-<version>-EntropyCalibration2`,
then one `<tensor name>: <hex>` line per tensor, where <hex> is the big-endian IEEE-754
bits of the float32 scale amax / 127. ORT's `calibration.cache` is a different format.
The scales are read off the Q/DQ model's activation QuantizeLinear nodes: symmetric
int8, so scale = amax / 127 exactly as TensorRT stores it.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Tuple

import onnx
from onnx import numpy_helper

from edge.fsutil import atomic_write_bytes

DEFAULT_TRT_VERSION = 8501  # TensorRT 8.5.1: JetPack 5.1


def scale_to_hex(scale: float) -> str:
    """float32 scale -> 8 hex digits of its big-endian bits (TensorRT's cache encoding)."""
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def activation_scales(qdq: onnx.ModelProto) -> Dict[str, float]:
    """Activation tensor -> its int8 scale, from each QuantizeLinear whose input is not a weight."""
    inits = {i.name: i for i in qdq.graph.initializer}
    scales: Dict[str, float] = {}
    for n in qdq.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]])
        if scale.size != 1:
            continue  # per-channel: weights only
        scales.setdefault(n.input[0], float(scale.reshape(())))
    return scales


def format_cache(scales: Dict[str, float], trt_version: int = DEFAULT_TRT_VERSION) -> str:
    lines = [f"TRT-{trt_version}-EntropyCalibration2"]
    lines += [f"{name}: {scale_to_hex(s)}" for name, s in sorted(scales.items())]
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> Tuple[str, Dict[str, float]]:
    """(header, tensor -> scale) of a cache file's text."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError("not a TensorRT calibration cache: no 'TRT-' header")
    scales = {}
    for ln in lines[1:]:
        name, _, hx = ln.rpartition(": ")
        scales[name] = hex_to_scale(hx.strip())
    return lines[0], scales


def write_cache(path: Path, qdq: onnx.ModelProto, trt_version: int = DEFAULT_TRT_VERSION) -> int:
    """Write the cache for `qdq`'s activations; returns the number of tensors."""
    scales = activation_scales(qdq)
    atomic_write_bytes(path, format_cache(scales, trt_version).encode())
    return len(scales)
