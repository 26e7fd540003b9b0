"""ONNX Runtime backend: FP32 or Q/DQ INT8 ONNX, on CPU (or any provider given).

INT8 kernels: on x86 CPUs without VNNI, ONNX Runtime's u8s8 integer kernels sum pairs of
products in saturating 16-bit registers (pmaddubsw), and a Q/DQ model loses accuracy
there: the demo student finds 13 of 24 test objects instead of 18 on such a CPU. With
`int8_kernels = "auto"` a Q/DQ model runs there with ORT's graph optimisations at the
basic level, which keeps each Q/DQ pair as dequantise + float kernel: the exact numbers
of the quantised model (those TensorRT computes), about 2.3x slower. CPUs with VNNI (or
AMX), and non-x86 CPUs, keep the integer kernels.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import FodError
from ..model_info import ModelInfo
from ..preprocess import model_input
from ..timing import clock

log = logging.getLogger(__name__)
INT8_KERNELS = ("auto", "integer", "float")


def integer_kernels_exact(cpuinfo: Optional[str] = None, machine: Optional[str] = None) -> bool:
    """Whether ORT's int8 kernels compute without 16-bit saturation on this CPU."""
    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # Arm's int8 dot products accumulate in 32 bits
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False  # unknown: take the exact path
    flags = set(cpuinfo.split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


class OnnxRuntimeBackend:
    def __init__(
        self,
        path: Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        threads: Optional[int] = None,
        model_bytes: Optional[bytes] = None,
        int8_kernels: str = "auto",
    ) -> None:
        """`model_bytes`: the bytes the caller hashed; ORT gets exactly these (no reopen by
        path between the hash check and the load). `path` then only names them in errors.
        `int8_kernels`: auto | integer | float, for Q/DQ models (see the module docstring)."""
        import onnxruntime as ort

        if int8_kernels not in INT8_KERNELS:
            raise FodError(f"int8_kernels must be one of {INT8_KERNELS}, got {int8_kernels!r}")
        so = ort.SessionOptions()
        try:
            data = model_bytes if model_bytes is not None else Path(path).read_bytes()
        except OSError as e:
            raise FodError(f"{path}: cannot read the model: {e}") from None
        # Q/DQ graphs name their op types verbatim in the protobuf.
        qdq = b"DequantizeLinear" in data
        self.kernels = "float32" if not qdq else int8_kernels
        if qdq and int8_kernels == "auto":
            self.kernels = "integer" if integer_kernels_exact() else "float"
            if self.kernels == "float":
                log.warning(
                    "%s: this x86 CPU has no VNNI, where ONNX Runtime's int8 kernels saturate; "
                    "running the Q/DQ model with float kernels (exact, about 2.3x slower)",
                    path,
                )
        if self.kernels == "float":
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        if threads is not None:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(data, so, providers=list(providers))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise FodError(f"{path}: ONNX Runtime cannot load it: {e}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != "images":
            raise FodError(f"{path}: expected one input 'images', got {[i.name for i in inputs]}")
        outs = [o.name for o in self.session.get_outputs()]
        if outs != ["boxes", "scores"]:
            raise FodError(f"{path}: expected outputs ['boxes', 'scores'], got {outs}")
        self.info = ModelInfo.from_metadata(
            self.session.get_modelmeta().custom_metadata_map, str(path)
        )
        want = {"uint8_nhwc": ("tensor(uint8)", 4), "uint8_nhw": ("tensor(uint8)", 3)}.get(
            self.info.input_layout, ("tensor(float)", 4)
        )
        if (inputs[0].type, len(inputs[0].shape)) != want:
            raise FodError(
                f"{path}: input 'images' is {inputs[0].type} of rank {len(inputs[0].shape)}, "
                f"but its metadata says {self.info.input_layout}"
            )
        self.path = path
        self.last_times: Dict[str, float] = {}  # ms of the last run's sub-stages (fod bench)

    def describe(self) -> str:
        """What runs, for the record: 'onnxruntime model.int8-cpu.onnx, integer kernels, CPU'."""
        providers = ", ".join(
            p.replace("ExecutionProvider", "") for p in self.session.get_providers()
        )
        return f"onnxruntime {Path(self.path).name}, {self.kernels} kernels, {providers}"

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 frames [N, H, W, 3] RGB or [N, H, W] grey -> the graph's own input."""
        return model_input(images, self.info.input_layout)

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """The graph on a prepared input -> boxes [N, A, 4], scores [N, A, C]."""
        t0 = clock()
        boxes, scores = self.session.run(["boxes", "scores"], {"images": x})
        self.last_times = {"compute": (clock() - t0) * 1e3}
        return boxes, scores

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """images [N, H, W, 3] uint8 RGB or [N, H, W] grey -> boxes [N, A, 4], scores [N, A, C]."""
        return self.run(self.prepare(images))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
