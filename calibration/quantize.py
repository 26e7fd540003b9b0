"""INT8 post-training quantization to a Q/DQ ONNX with ONNX Runtime's own tools (docs/design.md).

Explicit quantization (QuantizeLinear/DequantizeLinear pairs) is the one INT8 path
TensorRT 8.5, 10 and 11 all accept. Symmetric int8 activations and weights (zero
points 0, as TensorRT requires), per-channel weights, a dedicated Q/DQ pair per
consumer. The head's last convs and everything after them (DFL softmax and integral,
sigmoid, box decode) stay float by default: small particles are what INT8 loses first.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Set

import numpy as np
import onnx
import onnxruntime.quantization
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from edge.errors import FodError
from edge.fsutil import atomic_output
from edge.model_info import QUANTIZED_OPS
from edge.preprocess import model_input

METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
    "minmax": CalibrationMethod.MinMax,
}
HEAD_OUTPUT_CONVS = ("gfl_cls", "gfl_reg")  # the last cls/reg convs of the GFL head
QDQ_MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (their axis) came in 13
_ORT_QUANTIZER = str(Path(onnxruntime.quantization.__file__).parent)

log = logging.getLogger(__name__)


def model_opset(model: onnx.ModelProto) -> int:
    """The model's ONNX (default domain) opset; 0 where it names none."""
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def require_qdq_opset(model: onnx.ModelProto, path: Path) -> None:
    """FodError unless `model` can carry per-channel Q/DQ: below opset 13 the quantizer
    writes an `axis` its DequantizeLinear does not have (ONNX Runtime then refuses the INT8
    model after the whole calibration pass), or fails converting the graph's opset."""
    opset = model_opset(model)
    if opset < QDQ_MIN_OPSET:
        raise FodError(
            f"{path}: ONNX opset {opset}: per-channel INT8 (Q/DQ, as TensorRT takes it) needs "
            f"opset {QDQ_MIN_OPSET} or later; export it again (fod export, default opset 17)"
        )


def require_float(model: onnx.ModelProto, path: Path) -> None:
    """FodError where `model` is quantized already (a bundle's INT8 model given for the
    FP32 one): the quantizer would run its whole calibration pass, then write a graph ONNX
    Runtime refuses (duplicate node names), named by a temporary path."""
    n = sum(node.op_type in QUANTIZED_OPS for node in model.graph.node)
    if n:
        raise FodError(
            f"{path}: already quantized ({n} quantize, dequantize or integer nodes): "
            "calibrate the FP32 ONNX that `fod export` wrote"
        )


class StreamingReader(CalibrationDataReader):
    """Feeds calibration inputs one at a time from a generator factory: 500 letterboxed
    1280x800 frames would be 6 GB as float32, so nothing is held.

    `count` images in all; ORT's strided collection calls `set_range` for each chunk in
    order, and the reader stops at the chunk's end so the calibrator can fold the chunk's
    activations into its histograms and free them (about 2 GB per 1280x800 frame of
    GFL-R18: chunks of 8 peaked at 16 GB).
    """

    def __init__(
        self,
        make: Callable[[], Iterator[np.ndarray]],
        count: int,
        progress: bool = True,
        layout: str = "float32_nchw",
    ) -> None:
        """`layout`: the model's input (edge.model_info.INPUT_LAYOUTS)."""
        self._make, self._count, self._layout = make, count, layout
        # Collection is the long part (minutes at 1280x800) and ORT shows nothing for it.
        self._bar = tqdm(total=count, desc="calibration images", unit="img", disable=not progress)
        self.rewind()

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        if start_index != self._pos:  # ORT walks the chunks in order; anything else is a bug
            raise FodError(f"calibration chunk starts at {start_index}, reader is at {self._pos}")
        self._stop = min(end_index, self._count)

    def get_next(self) -> Optional[dict]:
        if self._pos >= self._stop:
            return None
        img = next(self._it, None)
        if img is None:
            return None
        self._pos += 1
        self._bar.update()
        return {"images": model_input(img[None], self._layout)}  # as the ORT backend builds it

    def rewind(self) -> None:
        self._it, self._pos, self._stop = self._make(), 0, self._count
        self._bar.reset()

    def close(self) -> None:
        self._bar.close()


def chunk_size(count: int, most: int = 4) -> int:
    """The largest divisor of `count` up to `most`: ORT's strided collection needs one."""
    return next(k for k in range(min(most, count), 0, -1) if count % k == 0)


def name_all_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name: exclusion lists and reports need names."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in taken:
                name += "_"
            n.name = name
            taken.add(name)


def float_tail(model: onnx.ModelProto, heads: Sequence[str] = HEAD_OUTPUT_CONVS) -> List[str]:
    """Names of the head's output convs and every node downstream of them."""
    convs = [
        n
        for n in model.graph.node
        if n.op_type == "Conv" and any(h in (n.name + " " + " ".join(n.input)) for h in heads)
    ]
    if not convs:
        raise FodError(
            f"no Conv of {', '.join(heads)} in the graph: is this a pharma-fod GFL export?"
        )
    consumers = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
    seen: Set[str] = set()
    stack = list(convs)
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        for t in n.output:
            stack.extend(consumers.get(t, []))
    return [n.name for n in model.graph.node if n.name in seen]  # graph order


class _QuantizerLog(logging.Filter):
    """ONNX Runtime's quantizer logs its inner workings, some 80 lines a GFL-R18 at INFO and
    WARNING (bias copies; a weight with no per-channel axis, quantized per tensor then).
    They are kept for debug logging (`fod -v`); otherwise dropped and their warnings
    counted, for one line at the end. Its errors pass as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.warnings: Counter[str] = Counter()

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.pathname.startswith(_ORT_QUANTIZER) or record.levelno >= logging.ERROR:
            return True
        if record.levelno >= logging.WARNING and not hasattr(record, "fod_counted"):
            record.fod_counted = True  # each handler filters it: count it once
            self.warnings[record.getMessage()] += 1
        return logging.getLogger().isEnabledFor(logging.DEBUG)


@contextlib.contextmanager
def quantizer_log() -> Iterator[None]:
    """ONNX Runtime's quantizer's log summed up (`_QuantizerLog`) while the block runs. The
    filter sits on the root logger's handlers: the quantizer logs through the root logger
    and through its modules' own, and a handler sees the records of both."""
    quiet, handlers = _QuantizerLog(), list(logging.getLogger().handlers)
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)
    if quiet.warnings:
        text, _ = quiet.warnings.most_common(1)[0]
        log.info(
            "ONNX Runtime's quantizer warned %d time(s) (%d distinct), most often: %s "
            "(fod -v shows every line)",
            sum(quiet.warnings.values()),
            len(quiet.warnings),
            text,
        )


def quantize_qdq(
    fp32: Path,
    out: Path,
    reader: StreamingReader,
    method: str = "entropy",
    exclude: Optional[Sequence[str]] = None,
    for_tensorrt: bool = True,
    ranges: Optional[Path] = None,
) -> List[str]:
    """Write a Q/DQ INT8 model to `out` (atomically); returns the nodes kept in float.

    `for_tensorrt`: symmetric int8 activations (zero point 0), what TensorRT requires.
    Otherwise uint8 asymmetric activations: ONNX Runtime's fast x86 path (its S8S8 convs
    run partly in float by default, and slower than float when forced). `ranges`: ORT's
    calibration-range cache; when it exists the calibration is not run again, so both
    variants come from one calibration.
    """
    if method not in METHODS:
        raise FodError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    model = onnx.load(str(fp32))
    name_all_nodes(model)
    keep_float = list(float_tail(model)) if exclude is None else list(exclude)
    unknown = set(keep_float) - {n.name for n in model.graph.node}
    if unknown:
        raise FodError(f"{fp32}: no node named {sorted(unknown)[0]!r} to keep in float")
    with tempfile.TemporaryDirectory() as work, atomic_output(out, suffix=".tmp.onnx") as tmp:
        named = Path(work) / "named.onnx"
        onnx.save(model, str(named))
        # ORT's recommended pre-pass: shape inference and constant folding, so every conv
        # bias is an initializer the quantizer can handle.
        prepped = Path(work) / "prepped.onnx"
        with quantizer_log():
            quant_pre_process(str(named), str(prepped), skip_symbolic_shape=True)
            quantize_static(
                str(prepped),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8 if for_tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=keep_float,
                calibrate_method=METHODS[method],
                extra_options={
                    "ActivationSymmetric": for_tensorrt,  # zero point 0: TensorRT's INT8
                    "WeightSymmetric": True,
                    "DedicatedQDQPair": for_tensorrt,
                    # Histograms grow chunk by chunk: ORT otherwise keeps every activation
                    # of every image (300 frames at 1280x800 did not fit in 24 GB).
                    "CalibStridedMinMax": chunk_size(len(reader)) if len(reader) else None,
                },
                calibration_cache_path=str(ranges) if ranges is not None else None,
            )
        qdq = onnx.load(str(tmp))
        # Keep the detector's metadata (class names, sizes, checkpoint hash) on the INT8 model.
        onnx.helper.set_model_props(qdq, {p.key: p.value for p in model.metadata_props})
        onnx.save(qdq, str(tmp))
    return keep_float
