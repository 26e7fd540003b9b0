"""Which bundled model a backend runs, and opening it: the one place the runtime,
`fod bench`, `fod engine` and `fod check` choose, so they all run the same file."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional, Tuple

from ..bundle import Bundle, model_mismatches
from ..engine_cache import default_cache_dir
from ..errors import FodError
from ..model_info import ModelInfo, read_onnx_metadata

# Model roles each (backend, precision) takes, in order of preference.
ORT_ROLES = {
    "fp32": ("fp32",),
    "int8": ("int8_cpu", "int8"),
    "auto": ("fp32", "int8_cpu", "int8"),
}


def trt_precision(precision: str, bundle: Bundle) -> str:
    """`auto` on TensorRT: INT8 where the bundle has the Q/DQ model, else FP16."""
    if precision == "auto":
        return "int8" if bundle.file("int8") is not None else "fp16"
    if precision == "fp32":
        raise FodError("model.precision 'fp32' is ONNX Runtime's; TensorRT takes int8, fp16, best")
    return precision


def model_path(bundle: Bundle, backend: str, precision: str) -> Path:
    if backend == "tensorrt":
        import tensorrt as trt

        from .trt_build import plan, require

        require(trt)
        roles = tuple(e["role"] for e in bundle.manifest["files"].values())
        p = plan(trt.__version__, trt_precision(precision, bundle), roles)
        path = bundle.file(p.model_role)
    elif backend == "onnxruntime":
        if precision not in ORT_ROLES:
            raise FodError(f"precision {precision!r}: ONNX Runtime takes fp32, int8 or auto")
        roles = ORT_ROLES[precision]
        path = next((bundle.file(r) for r in roles if bundle.file(r) is not None), None)
    else:
        raise FodError(f"unknown backend {backend!r}")
    if path is None:
        raise FodError(f"{bundle.root}: no {precision} model in the bundle for {backend}")
    return path


def read_verified(bundle: Bundle, path: Path) -> Tuple[bytes, str]:
    """The model's bytes and sha256, checked against the manifest again: hash what is
    loaded, load what was hashed; and its metadata against the manifest's account of the
    model, whose classes, size and reference counts the unit goes by."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != bundle.manifest["files"][path.name]["sha256"]:
        raise FodError(f"{path}: changed after the bundle was verified")
    info = ModelInfo.from_metadata(read_onnx_metadata(data, str(path)), str(path))
    bad = model_mismatches(info, bundle.manifest)
    if bad:
        raise FodError(f"{path}: not the model its bundle's manifest describes: " + "; ".join(bad))
    return data, digest


def open_backend(
    bundle: Bundle,
    backend: str,
    precision: str = "auto",
    threads: Optional[int] = None,
    int8_kernels: str = "auto",
    engine_cache: str = "",
    dla_core: int = -1,
) -> Tuple[Any, str]:
    """(backend, model sha256) for `bundle`; the TensorRT backend loads the engine built
    on this unit by `fod engine` and refuses any other."""
    path = model_path(bundle, backend, precision)
    data, digest = read_verified(bundle, path)
    if backend == "tensorrt":
        from .tensorrt_backend import TensorRTBackend

        cache = Path(engine_cache) if engine_cache else default_cache_dir()
        prec = trt_precision(precision, bundle)
        return TensorRTBackend(data, digest, cache, prec, dla_core, str(path)), digest
    from .onnxruntime_backend import OnnxRuntimeBackend

    ort = OnnxRuntimeBackend(path, threads=threads, model_bytes=data, int8_kernels=int8_kernels)
    return ort, digest


def open_configured(bundle: Bundle, model: Any) -> Tuple[Any, str]:
    """`open_backend` with the line config's [model] section (edge.config.ModelConfig)."""
    return open_backend(
        bundle,
        model.backend,
        model.precision,
        threads=model.threads,
        int8_kernels=model.int8_kernels,
        engine_cache=model.engine_cache,
        dla_core=model.dla_core,
    )
