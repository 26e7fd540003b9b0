"""Building a TensorRT engine on the unit from a bundle's ONNX, per TensorRT version.

Which model, which flags (`plan`, pure and tested without TensorRT):
- 8.5 / 8.6 (JetPack 5.1 / 6.0): explicit-batch network; Q/DQ INT8 with the INT8 flag
  (plus FP16 for the layers kept float under "best"); FP16 from the FP32 model. Only
  here can the TensorRT calibration cache serve an implicit INT8 build of the FP32
  model (a bundle without the Q/DQ model).
- 9 / 10 (JetPack 6.1+ / 7): explicit batch is the only mode; the same flags.
- 11+: networks are strongly typed and the precision flags are gone: the Q/DQ model
  gives INT8 by itself, float layers stay as the ONNX types them (FP16 needs an FP16
  ONNX, which bundles do not carry).
`build` is the thin part that calls TensorRT; not exercised here (no GPU).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from ..errors import FodError

log = logging.getLogger(__name__)
PRECISIONS = ("int8", "fp16", "best")
MIN_VERSION = (8, 5, 1)  # name-based tensor API, execute_async_v3, UINT8 network inputs


def require(trt: Any) -> str:
    """TensorRT's version, or ModuleNotFoundError when `tensorrt` is not the real module
    (tensorrt-stubs alone makes `import tensorrt` succeed as an empty namespace)."""
    version = getattr(trt, "__version__", None)
    if not isinstance(version, str):
        raise ModuleNotFoundError("tensorrt is not installed", name="tensorrt")
    return version


def parse_version(text: str) -> Tuple[int, int, int]:
    """'8.5.2.2' -> (8, 5, 2); raises FodError on anything else."""
    parts = text.strip().split(".")
    try:
        nums = [int(p) for p in parts[:3]]
    except ValueError:
        raise FodError(f"cannot read TensorRT version {text!r}") from None
    if not nums:
        raise FodError(f"cannot read TensorRT version {text!r}")
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


@dataclass(frozen=True)
class BuildPlan:
    model_role: str  # the bundle file it builds from: int8 (Q/DQ) or fp32
    network_flags: Tuple[str, ...]  # NetworkDefinitionCreationFlag names
    builder_flags: Tuple[str, ...]  # BuilderFlag names
    implicit_cache: bool  # INT8 ranges from the bundle's calib.cache (8.x only)
    note: str  # what the engine's precision will be, for the log and the sidecar


def plan(version: str, precision: str, roles: Tuple[str, ...]) -> BuildPlan:
    """The build for TensorRT `version` at `precision` from a bundle holding `roles`."""
    if precision not in PRECISIONS:
        raise FodError(f"--precision must be one of {PRECISIONS}, got {precision!r}")
    v = parse_version(version)
    if v < MIN_VERSION:
        raise FodError(f"TensorRT {version}: this package needs 8.5.1 or newer (JetPack 5.1+)")
    major = v[0]
    net: Tuple[str, ...] = ("EXPLICIT_BATCH",) if major == 8 else ()
    if precision == "fp16":
        if major >= 11:
            raise FodError(
                f"TensorRT {version} is strongly typed: an FP32 ONNX builds an FP32 engine; "
                "use --precision int8 (the Q/DQ model)"
            )
        if "fp32" not in roles:
            raise FodError("--precision fp16 needs the bundle's FP32 model")
        return BuildPlan("fp32", net, ("FP16",), False, "FP16")
    if "int8" in roles:
        if major >= 11:
            return BuildPlan("int8", net, (), False, "INT8 (Q/DQ), float layers as typed")
        flags = ("INT8", "FP16") if precision == "best" else ("INT8",)
        note = "INT8 (Q/DQ), float layers in " + ("FP16" if precision == "best" else "FP32")
        return BuildPlan("int8", net, flags, False, note)
    if major == 8 and "fp32" in roles and "cache" in roles:
        flags = ("INT8", "FP16") if precision == "best" else ("INT8",)
        return BuildPlan("fp32", net, flags, True, "implicit INT8 from calib.cache")
    raise FodError(
        "no INT8 model for TensorRT in the bundle: it needs the Q/DQ model (`fod calibrate` "
        "model.int8.onnx; int8_cpu is ONNX Runtime's), or on TensorRT 8 the FP32 model and "
        "calib.cache"
    )


def cache_calibrator(trt: Any, cache: bytes) -> Any:
    """A calibrator that serves ranges from a calibration cache only (implicit INT8, 8.x):
    TensorRT reads the cache first and asks for no image when every tensor is in it."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: Any) -> None:
            return None  # no images: every range comes from the cache

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def build(
    onnx_bytes: bytes,
    p: BuildPlan,
    max_batch: int,
    workspace_mb: int,
    dla_core: int = -1,
    cache: Optional[bytes] = None,
    source: str = "model",
) -> bytes:
    """Serialized engine for `onnx_bytes` under plan `p`; dynamic batch 1..max_batch."""
    import tensorrt as trt

    require(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in p.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FodError(f"{source}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for name in p.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    if p.implicit_cache:
        if cache is None:
            raise FodError(f"{source}: implicit INT8 needs the bundle's calib.cache")
        config.int8_calibrator = cache_calibrator(trt, cache)
    if dla_core >= 0:
        if dla_core >= builder.num_DLA_cores:
            raise FodError(f"--dla {dla_core}: this unit has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU
    inp = network.get_input(0)
    item = list(inp.shape[1:])  # the batch axis is -1 (dynamic)
    profile = builder.create_optimization_profile()
    one, most = trt.Dims([1, *item]), trt.Dims([max_batch, *item])
    profile.set_shape(inp.name, one, most, most)
    config.add_optimization_profile(profile)
    log.info("building a TensorRT %s engine (%s); this takes minutes", trt.__version__, p.note)
    plan_bytes = builder.build_serialized_network(network, config)
    if plan_bytes is None:
        raise FodError(f"{source}: TensorRT could not build an engine (see its log above)")
    return bytes(plan_bytes)


def ensure_engine(
    bundle: Any,
    precision: str,
    workspace_mb: int,
    dla_core: int,
    max_batch: int,
    cache: Any,
    force: bool = False,
) -> Tuple[Any, Dict[str, Any], bool]:
    """(engine path, sidecar, built?) for a verified bundle on this unit: the cached
    engine when its key matches, else a new one (a stale or foreign one is replaced)."""
    import tensorrt as trt

    from .. import engine_cache
    from .cuda import Context
    from .select import read_verified

    require(trt)

    roles = tuple(e["role"] for e in bundle.manifest["files"].values())
    p = plan(trt.__version__, precision, roles)
    model = bundle.file(p.model_role)
    data, digest = read_verified(bundle, model)
    ctx = Context(0)
    try:
        key = engine_cache.EngineKey(digest, trt.__version__, ctx.name, dla_core, precision)
        found = None if force else engine_cache.lookup(cache, key)
        if found is not None:
            meta = engine_cache.read_sidecar(engine_cache.paths(cache, key)[1])
            if int(meta.get("max_batch", 1)) >= max_batch:
                return found, meta, False
        cal = bundle.file("cache")
        with ctx:
            engine = build(
                data,
                p,
                max_batch,
                workspace_mb,
                dla_core,
                cal.read_bytes() if p.implicit_cache and cal is not None else None,
                str(model),
            )
    finally:
        ctx.free()
    extra = {
        "plan": p.note,
        "builder_flags": list(p.builder_flags),
        "model_file": model.name,
        "bundle": {k: bundle.manifest.get(k) for k in ("name", "version")},
        "max_batch": max_batch,
        "workspace_mb": workspace_mb,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = engine_cache.store(cache, key, engine, extra)
    return path, engine_cache.read_sidecar(engine_cache.paths(cache, key)[1]), True
