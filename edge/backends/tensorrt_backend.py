"""TensorRT backend: a cached engine built on this unit (`fod engine`), run with the
name-based tensor API (TensorRT 8.5+: set_input_shape, set_tensor_address,
execute_async_v3) over pycuda buffers, with the same interface as the ONNX Runtime
backend (prepare / run / infer, last_times with h2d, compute, d2h).

The engine must match this unit: the model's sha256, TensorRT's version and the GPU's
name (and DLA core) are checked against its sidecar before it is deserialised.
Buffers are sized for the engine's largest batch once; the CUDA context is made current
on the thread that runs inference for each call. Not exercised on the project's
machines (no TensorRT, no GPU): type-checked against tensorrt-stubs; its pure parts
(key, sidecar, plan, I/O table) are tested.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import engine_cache
from ..errors import FodError
from ..model_info import ModelInfo
from ..preprocess import model_input
from .cuda import Context, DeviceBuffer, HostBuffer, Stream, checked, elapsed_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IoTensor:
    name: str
    is_input: bool
    dtype: Any  # numpy dtype
    item_shape: Tuple[int, ...]  # shape without the batch axis


def io_table(engine: Any) -> List[IoTensor]:
    """The engine's tensors, checked against the model contract: input `images`, outputs
    `boxes` and `scores`, batch first."""
    import tensorrt as trt

    out = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(engine.get_tensor_shape(name))
        out.append(
            IoTensor(
                name,
                engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                np.dtype(trt.nptype(engine.get_tensor_dtype(name))),
                tuple(int(d) for d in shape[1:]),
            )
        )
    check_io(out)
    return out


def check_io(tensors: List[IoTensor]) -> None:
    names = sorted((t.name, t.is_input) for t in tensors)
    want = [("boxes", False), ("images", True), ("scores", False)]
    if names != want:
        raise FodError(f"engine tensors {names}, expected {want}")
    for t in tensors:
        if any(d < 0 for d in t.item_shape):
            raise FodError(f"engine tensor {t.name}: only the batch axis may be dynamic")


class TensorRTBackend:
    def __init__(
        self,
        model_bytes: bytes,
        model_sha256: str,
        cache: Path,
        precision: str = "int8",
        dla_core: int = -1,
        source: str = "model",
    ) -> None:
        """Load the cached engine for the model whose bytes the caller hashed; refuse one
        that was built for another model, TensorRT, GPU or DLA core."""
        import tensorrt as trt

        from ..model_info import read_onnx_metadata
        from .trt_build import require

        require(trt)

        self.info = ModelInfo.from_metadata(read_onnx_metadata(model_bytes, source), source)
        self.ctx = Context(0)
        self._buffers: List[Any] = []
        try:
            key = engine_cache.EngineKey(
                model_sha256, trt.__version__, self.ctx.name, dla_core, precision
            )
            path, sidecar = engine_cache.paths(cache, key)
            if not sidecar.exists():
                raise engine_cache.EngineMismatch(
                    f"{source}: no engine for this model on this unit in {cache} "
                    f"(TensorRT {trt.__version__}, {self.ctx.name}): run `fod engine`"
                )
            self.sidecar = engine_cache.check(path, sidecar, key)
            self.engine_path = path
            with self.ctx:
                self._load(trt, path.read_bytes())
        except BaseException:
            self.close()
            raise
        self.last_times: Dict[str, float] = {}

    def describe(self) -> str:
        """What runs, for the record: the engine file (its name keys model, TensorRT, GPU)."""
        return f"tensorrt engine {self.engine_path.name} on {self.ctx.name}"

    def _load(self, trt: Any, data: bytes) -> None:
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = checked(
            "deserialize_cuda_engine", self._runtime.deserialize_cuda_engine, data
        )
        if self.engine is None:
            raise FodError(f"{self.engine_path}: TensorRT cannot deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.io = {t.name: t for t in io_table(self.engine)}
        self.max_batch = int(self.sidecar.get("max_batch", 1))
        self.stream = Stream()
        self.host: Dict[str, HostBuffer] = {}
        self.device: Dict[str, DeviceBuffer] = {}
        for t in self.io.values():
            shape = (self.max_batch, *t.item_shape)
            self.host[t.name] = HostBuffer(shape, t.dtype)
            self.device[t.name] = DeviceBuffer(int(np.prod(shape)) * t.dtype.itemsize)
            self._buffers += [self.host[t.name], self.device[t.name]]
            checked(
                f"set_tensor_address({t.name})",
                self.context.set_tensor_address,
                t.name,
                int(self.device[t.name]),
            )

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 frames -> the engine's input (uint8 graphs: the frames as they are)."""
        return model_input(images, self.info.input_layout)

    def run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        n = int(x.shape[0])
        inp = self.io["images"]
        if not 1 <= n <= self.max_batch or tuple(x.shape[1:]) != inp.item_shape:
            raise FodError(
                f"input {x.shape} does not fit the engine ({self.max_batch}, *{inp.item_shape})"
            )
        with self.ctx:
            host_in = self.host["images"].array[:n]
            np.copyto(host_in, x, casting="no")
            checked("set_input_shape", self.context.set_input_shape, "images", (n, *inp.item_shape))
            t0 = self.stream.record()
            self.stream.h2d(self.device["images"], host_in)
            t1 = self.stream.record()
            checked("execute_async_v3", self.context.execute_async_v3, self.stream.handle)
            t2 = self.stream.record()
            outs = []
            for name in ("boxes", "scores"):
                host = self.host[name].array[:n]
                self.stream.d2h(host, self.device[name])
                outs.append(host)
            t3 = self.stream.record()
            self.stream.synchronize()
            self.last_times = {
                "h2d": elapsed_ms(t0, t1),
                "compute": elapsed_ms(t1, t2),
                "d2h": elapsed_ms(t2, t3),
            }
        return outs[0].copy(), outs[1].copy()  # the pinned buffers are reused next call

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return self.run(self.prepare(images))

    def close(self) -> None:
        ctx: Optional[Context] = getattr(self, "ctx", None)
        if ctx is None:
            return
        try:
            with ctx:
                for b in self._buffers:
                    b.free()
                self._buffers = []
                self.context = self.engine = self._runtime = None
        finally:
            ctx.free()
            self.ctx = None  # type: ignore[assignment]

    def __enter__(self) -> TensorRTBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
