"""The line configuration: dataclasses loaded from TOML, validated with errors naming the key."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from .alarm import ALARM_OUTPUTS
from .audit import AuditConfig
from .decision import DecisionConfig
from .errors import FodError
from .gpio import GpioConfig
from .postprocess import PostprocessConfig
from .preprocess import parse_grid, tile_windows
from .sources import source_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack's Python 3.8/3.10
    import tomli as tomllib


class ConfigError(FodError):
    """A line configuration is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class CameraConfig:
    # sim | file:<video or PNG folder> | v4l2:<index or /dev/videoN> | gst:<pipeline>
    source: str = "sim"
    frames: int = 12  # frames taken of each container after spin-stop
    frame_timeout_ms: float = 200.0  # a frame later than this counts as missing
    mono: bool = False  # monochrome camera: frames stay grey until the backend widens them
    width: int = 0  # px of every frame; 0: the model's input width (a frame of another size is
    height: int = 0  # corrupt, however it compares with the container's other frames)


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = "models/demo"  # bundle folder or .tar.gz
    public_key: Optional[str] = None  # the bundle must be signed by this key (fod run needs it)
    allow_unsigned: bool = False  # run an unsigned bundle (commissioning only; logged)
    backend: str = "onnxruntime"  # onnxruntime | tensorrt (an engine built by `fod engine`)
    # onnxruntime: fp32 | int8 | auto (fp32 if bundled, else int8);
    # tensorrt: int8 | fp16 | best | auto (int8 if the bundle has the Q/DQ model, else fp16)
    precision: str = "auto"
    threads: Optional[int] = None  # ONNX Runtime intra-op threads
    int8_kernels: str = "auto"  # auto | integer | float: float on x86 without VNNI (saturation)
    engine_cache: str = ""  # TensorRT engines; "": /var/lib/pharma-fod/engines or ~/.cache
    dla_core: int = -1  # TensorRT on a DLA core (Xavier/Orin); -1: the GPU
    # A camera frame larger than the model input is cut into COLSxROWS tiles overlapping by
    # tile_overlap px, each run through the model at (nearly) its own pixels; "1x1": whole.
    tiles: str = "1x1"
    tile_overlap: int = 32
    # Each frame is also run mirrored left-right and the two views' detections merged:
    # a second look for an unsure particle, at twice the model calls per frame.
    mirror: bool = False
    # The bundle's reference frames go through the model again every this many seconds
    # while the line runs (one frame at a time, when no container waits for the model); a
    # round that finds too few of their objects stops the line. 0: only at start.
    reference_every_s: float = 10.0


@dataclass(frozen=True)
class TimingConfig:
    decision_margin_ms: float = 100.0  # a decision must be ready this long before the gate
    queue_depth: int = 4  # containers waiting for inference before overflow rejects them
    max_restarts: int = 3  # a stage that crashed more often stays down: fod run exits non-zero


@dataclass(frozen=True)
class MetricsConfig:
    port: int = 9108  # Prometheus text endpoint; 0 = off
    address: str = "127.0.0.1"  # loopback; a fleet's scraper needs the unit's LAN address


@dataclass(frozen=True)
class LineConfig:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    timing: TimingConfig = field(default_factory=TimingConfig)
    audit: AuditConfig = field(default_factory=lambda: AuditConfig(Path("audit")))
    metrics: MetricsConfig = field(default_factory=MetricsConfig)

    def digest(self) -> str:
        """sha256 of the effective configuration, recorded with every container."""

        def enc(o: Any) -> Any:
            return str(o) if isinstance(o, Path) else o

        text = json.dumps(dataclasses.asdict(self), default=enc, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


T = TypeVar("T")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _build(cls: Type[T], data: Any, where: str, source: str) -> T:
    """cls(**data), checking every key and value type against the field defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{where}] must be a table")
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{source}: unknown key {where}.{key}")
        default = _default(known[key])
        name = f"{where}.{key}"
        if key == "folder":
            if not isinstance(value, str):
                raise ConfigError(f"{source}: {name} must be a path string, got {value!r}")
            value = Path(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: {name} must be true or false, got {value!r}")
        elif isinstance(default, (int, float)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or (isinstance(default, int) and not isinstance(value, int)):
                kind = "an integer" if isinstance(default, int) else "a number"
                raise ConfigError(f"{source}: {name} must be {kind}, got {value!r}")
            if key == "dla_core" and value < -1:
                raise ConfigError(f"{source}: {name} must be -1 (the GPU) or a DLA core number")
            if value < 0 and key != "dla_core":
                raise ConfigError(f"{source}: {name} must not be negative, got {value!r}")
            value = type(default)(value)
        elif isinstance(default, dict) and not isinstance(value, dict):
            raise ConfigError(f"{source}: {name} must be a table, got {value!r}")
        elif (isinstance(default, str) or key.endswith("_pin")) and not isinstance(
            value, (str, type(None))
        ):
            like = ' such as "GPIO17" (BCM numbering) or "BOARD11"' if key.endswith("_pin") else ""
            raise ConfigError(f"{source}: {name} must be a string{like}, got {value!r}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: [{where}]: {e}") from None


def parse_config(data: Dict[str, Any], source: str = "<config>") -> LineConfig:
    sections = {f.name: f for f in fields(LineConfig)}
    for key in data:
        if key not in sections:
            raise ConfigError(f"{source}: unknown section [{key}]")
    kw: Dict[str, Any] = {}
    types = {
        "camera": CameraConfig,
        "model": ModelConfig,
        "decision": DecisionConfig,
        "postprocess": PostprocessConfig,
        "gpio": GpioConfig,
        "timing": TimingConfig,
        "audit": AuditConfig,
        "metrics": MetricsConfig,
    }
    for name, section in data.items():
        if name == "audit" and "folder" not in section:
            section = dict(section, folder="audit")
        kw[name] = _build(types[name], section, name, source)
    cfg = LineConfig(**kw)
    _check(cfg, source)
    return cfg


def _finite(obj: Any, where: str, source: str) -> None:
    """Every number in the config must be finite: `inf` and `nan` break timers and compares."""
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ConfigError(f"{source}: {where}.{f.name} must be a finite number, got {v!r}")


def _check(cfg: LineConfig, source: str) -> None:
    for name in ("camera", "model", "decision", "postprocess", "gpio", "timing"):
        _finite(getattr(cfg, name), name, source)
    if cfg.camera.frames < 1:
        raise ConfigError(f"{source}: camera.frames must be >= 1")
    problem = None if cfg.camera.source == "sim" else source_problem(cfg.camera.source)
    if problem is not None:
        raise ConfigError(f"{source}: camera.source {problem}")
    if cfg.timing.queue_depth < 1:
        raise ConfigError(f"{source}: timing.queue_depth must be >= 1 (0 would be unbounded)")
    if not cfg.gpio.delay_ms > 0 or cfg.gpio.delay_ms > 60_000:
        raise ConfigError(f"{source}: gpio.delay_ms must be in (0, 60000], got {cfg.gpio.delay_ms}")
    if not 0 < cfg.gpio.pulse_ms < cfg.gpio.delay_ms:
        raise ConfigError(f"{source}: gpio.pulse_ms must be in (0, gpio.delay_ms)")
    if not 0 < cfg.gpio.gate_feedback_ms < cfg.gpio.pulse_ms:  # it is read at the pulse's end
        raise ConfigError(f"{source}: gpio.gate_feedback_ms must be in (0, gpio.pulse_ms)")
    d = cfg.decision
    tops = {  # each key's range is [0, top]
        "score_threshold": 1,
        "track_threshold": 1,
        "unsure_weight": 1,
        "rising_steps": 1,
        "moving_weight": 100,
        "static_weight": 100,
        "rising_weight": 100,
        "wander_straightness": 1,
        "wander_roughness": 2,  # a step can at most reverse: a change of 2x its size
    }
    for key, top in tops.items():
        if not 0 <= getattr(d, key) <= top:
            raise ConfigError(f"{source}: decision.{key} out of range, got {getattr(d, key)!r}")
    if d.match_distance == 0:  # every track one sighting long: a particle would never reject
        raise ConfigError(f"{source}: decision.match_distance must be > 0 px")
    for name, thr in d.class_thresholds.items():
        if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not 0 <= thr <= 1:
            raise ConfigError(
                f"{source}: decision.class_thresholds.{name} must be a number in [0, 1], "
                f"got {thr!r}"
            )
    if cfg.gpio.energise_to not in ("reject", "accept"):
        raise ConfigError(f"{source}: gpio.energise_to must be 'reject' or 'accept'")
    if cfg.gpio.alarm_energise_to not in ALARM_OUTPUTS:
        raise ConfigError(f"{source}: gpio.alarm_energise_to must be one of {tuple(ALARM_OUTPUTS)}")
    allowed = (
        ("fp32", "int8", "auto")
        if cfg.model.backend != "tensorrt"
        else ("int8", "fp16", "best", "auto")
    )
    if cfg.model.precision not in allowed:
        raise ConfigError(
            f"{source}: model.precision must be one of {allowed} for {cfg.model.backend}"
        )
    threads = cfg.model.threads
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 0
    ):
        raise ConfigError(
            f"{source}: model.threads must be an integer >= 0 (0: ONNX Runtime's default)"
        )
    if cfg.model.int8_kernels not in ("auto", "integer", "float"):
        raise ConfigError(f"{source}: model.int8_kernels must be 'auto', 'integer' or 'float'")
    try:
        grid = parse_grid(cfg.model.tiles)
        if cfg.camera.width and cfg.camera.height:  # else at start, for the model's size
            tile_windows((cfg.camera.width, cfg.camera.height), grid, cfg.model.tile_overlap)
    except ValueError as e:
        raise ConfigError(f"{source}: model.tiles: {e}") from None
    if cfg.model.backend not in ("onnxruntime", "tensorrt"):
        raise ConfigError(f"{source}: model.backend must be 'onnxruntime' or 'tensorrt'")
    if not 0 < cfg.postprocess.score_threshold <= 1 or not 0 < cfg.postprocess.nms_iou <= 1:
        raise ConfigError(f"{source}: postprocess thresholds must lie in (0, 1]")
    for key in ("nms_pre", "max_per_image"):  # 0 keeps no detection: a blind line
        if getattr(cfg.postprocess, key) < 1:
            raise ConfigError(f"{source}: postprocess.{key} must be >= 1")
    if cfg.audit.rotate_bytes < 2**20:  # each row would start a file: thousands a shift
        raise ConfigError(f"{source}: audit.rotate_bytes must be at least 1 MiB (1048576)")
    if cfg.timing.decision_margin_ms >= cfg.gpio.delay_ms:
        raise ConfigError(f"{source}: timing.decision_margin_ms must be below gpio.delay_ms")
    if not 0 < cfg.metrics.port < 65536 and cfg.metrics.port != 0:
        raise ConfigError(f"{source}: metrics.port must be 0 (off) or a TCP port")
    try:
        ipaddress.ip_address(cfg.metrics.address)
    except ValueError:
        raise ConfigError(
            f"{source}: metrics.address must be an IP address, got {cfg.metrics.address!r}"
        ) from None


def blind_spots(cfg: LineConfig) -> List[str]:
    """Why no detection could ever reject a container under `cfg` (empty: it can). A line
    run so passes every container the faults spare; `fod run` refuses it and `fod check`
    fails it, while `fod simulate` warns (an experiment may reject on faults alone)."""
    d, out = cfg.decision, []
    reach = d.moving_weight * cfg.camera.frames
    if reach < d.min_evidence:
        out.append(
            f"decision.min_evidence {d.min_evidence:g} is out of reach: a moving particle seen "
            f"in all {cfg.camera.frames} camera.frames counts {reach:g} "
            f"(decision.moving_weight {d.moving_weight:g} a frame)"
        )
    if cfg.postprocess.score_threshold >= 1:
        out.append("postprocess.score_threshold is 1: the model passes on no detection")
    # A track starts at its class's threshold; at 1 only unsure tracks (track_threshold,
    # unsure_weight) can still reach min_evidence. Classes the model has but the config
    # does not name take decision.score_threshold.
    unsure_reach = reach * d.unsure_weight if d.track_threshold < 1 else 0.0
    if unsure_reach < d.min_evidence:
        starts = [("score_threshold", "any class not in class_thresholds", d.score_threshold)]
        starts += [(f"class_thresholds.{n}", n, t) for n, t in sorted(d.class_thresholds.items())]
        for key, whom, thr in starts:
            if thr >= 1:
                out.append(f"decision.{key} is 1: no track of {whom} starts")
    return out


def frames_for_model(
    cfg: LineConfig, input_size: Tuple[int, int], input_layout: str
) -> Tuple[Tuple[int, ...], Tuple[int, int]]:
    """The shape of every camera frame ((h, w) grey, (h, w, 3) RGB) and the tile grid, for
    the model the unit loaded; raises FodError where the frames cannot reach that model or
    no box in them could count (`decision.min_size` over the frame's longer side).
    `fod run` and `fod check` both ask here, so a config the preflight passes starts."""
    if input_layout == "uint8_nhw" and not cfg.camera.mono:
        raise FodError(f"{cfg.model.bundle}: the model takes grey frames; set camera.mono = true")
    w = cfg.camera.width or input_size[0]
    h = cfg.camera.height or input_size[1]
    grid = parse_grid(cfg.model.tiles)
    try:  # the config alone could check this only for a camera of a given size
        tile_windows((w, h), grid, cfg.model.tile_overlap)
    except ValueError as e:
        raise FodError(f"model.tiles for {w}x{h} frames: {e}") from None
    size = cfg.decision.in_frame(h).min_size
    if size > max(w, h):  # every box dropped: a line that could only pass containers
        raise FodError(f"decision.min_size is {size:g} px in {w}x{h} frames: no box is that large")
    return ((h, w) if cfg.camera.mono else (h, w, 3)), grid


def check_classes(cfg: LineConfig, class_names: Any, source: str) -> None:
    """decision.class_thresholds may name only the model's classes (a typo would silently
    fall back to the default threshold)."""
    unknown = sorted(set(cfg.decision.class_thresholds) - set(class_names))
    if unknown:
        raise ConfigError(
            f"{source}: decision.class_thresholds: unknown class(es) {unknown}; "
            f"the model's classes are {list(class_names)}"
        )


def load_config(path: Path) -> LineConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: line config not found") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, str(path))
