"""CUDA resources for the TensorRT backend, over pycuda: one small class per resource
(context, device buffer, pinned host buffer, stream, event), every driver call through
one checker that raises a named error, explicit free plus context managers.

Not exercised on the project's machines (no GPU, no CUDA): kept thin, type-checked,
and the checker tested with a fake driver error.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, TypeVar

import numpy as np

from ..errors import FodError

T = TypeVar("T")


class CudaError(FodError):
    """A CUDA driver call failed; the message names the call."""


def _driver() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise CudaError(
            f"pycuda is not installed ({e}): pip install 'pharma-fod[jetson]'"
        ) from None
    return cuda


def checked(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args) with any pycuda driver error (and a TensorRT call's False) raised as
    CudaError naming `what`."""
    try:
        out = fn(*args, **kwargs)
    except FodError:
        raise
    except Exception as e:  # pycuda.driver.Error and its LogicError/MemoryError/...
        if type(e).__module__.split(".")[0] not in ("pycuda", "tensorrt", "_pycuda"):
            raise  # a bug of ours, not a CUDA failure: keep its traceback
        raise CudaError(f"{what}: {type(e).__name__}: {e}") from None
    if out is False:  # TensorRT's setters and execute report failure as False
        raise CudaError(f"{what}: returned False")
    return out


class Context:
    """The CUDA context of one device. `with ctx:` makes it current on the calling thread
    (the thread that infers, whichever it is) and pops it after."""

    def __init__(self, device: int = 0) -> None:
        cuda = _driver()
        checked("cuInit", cuda.init)
        self.device = checked(f"cuDeviceGet({device})", cuda.Device, device)
        self.name: str = checked("cuDeviceGetName", self.device.name)
        self._ctx: Optional[Any] = checked("cuCtxCreate", self.device.make_context)
        checked("cuCtxPopCurrent", cuda.Context.pop)  # created current; used only via `with`

    def __enter__(self) -> Context:
        if self._ctx is None:
            raise CudaError("CUDA context used after free()")
        checked("cuCtxPushCurrent", self._ctx.push)
        return self

    def __exit__(self, *exc: object) -> None:
        checked("cuCtxPopCurrent", _driver().Context.pop)

    def free(self) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            checked("cuCtxDestroy", ctx.detach)


class DeviceBuffer:
    """`nbytes` of device memory; `int(buf)` is its address for TensorRT."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._mem: Optional[Any] = checked(f"cuMemAlloc({nbytes})", _driver().mem_alloc, nbytes)

    def __int__(self) -> int:
        if self._mem is None:
            raise CudaError("device buffer used after free()")
        return int(self._mem)

    def free(self) -> None:
        if self._mem is not None:
            mem, self._mem = self._mem, None
            checked("cuMemFree", mem.free)

    def __enter__(self) -> DeviceBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class HostBuffer:
    """Pinned (page-locked) host memory as a numpy array: async copies need it."""

    def __init__(self, shape: Tuple[int, ...], dtype: Any) -> None:
        self.array: np.ndarray = checked(
            f"cuMemHostAlloc{shape}", _driver().pagelocked_empty, shape, dtype
        )

    def free(self) -> None:
        base = getattr(self.array, "base", None)
        if base is not None and hasattr(base, "free"):
            checked("cuMemFreeHost", base.free)
        self.array = np.empty((0,), self.array.dtype)

    def __enter__(self) -> HostBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.free()


class Stream:
    def __init__(self) -> None:
        cuda = _driver()
        self._cuda = cuda
        self.stream = checked("cuStreamCreate", cuda.Stream)

    @property
    def handle(self) -> int:
        return int(self.stream.handle)

    def h2d(self, dst: DeviceBuffer, src: np.ndarray) -> None:
        checked("cuMemcpyHtoDAsync", self._cuda.memcpy_htod_async, int(dst), src, self.stream)

    def d2h(self, dst: np.ndarray, src: DeviceBuffer) -> None:
        checked("cuMemcpyDtoHAsync", self._cuda.memcpy_dtoh_async, dst, int(src), self.stream)

    def record(self) -> Any:
        """A timing event recorded now on this stream."""
        ev = checked("cuEventCreate", self._cuda.Event)
        checked("cuEventRecord", ev.record, self.stream)
        return ev

    def synchronize(self) -> None:
        checked("cuStreamSynchronize", self.stream.synchronize)


def elapsed_ms(start: Any, end: Any) -> float:
    """ms between two recorded events (after the stream synchronised)."""
    return float(checked("cuEventElapsedTime", end.time_since, start))
