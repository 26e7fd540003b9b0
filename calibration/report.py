"""The INT8-vs-FP32 report: accuracy, drop, CPU latency, what stayed float, what calibrated it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from calibration.metrics import show
from edge.fsutil import atomic_write_bytes, atomic_write_json

METRIC_NAMES = ("ap50", "ap", "ap_small", "ar", "ar_small")


def build_report(
    metrics: Dict[str, Dict[str, float]],
    latency: Dict[str, Dict[str, float]],
    float_nodes: List[str],
    calibration: Dict[str, Any],
) -> Dict[str, Any]:
    """`metrics` and `latency` keyed by model: fp32, int8 (TensorRT Q/DQ), int8_cpu (ORT U8S8)."""
    return {
        "metrics": metrics,
        "drop_points": drops(metrics["fp32"], metrics["int8"]),
        "drop_points_cpu": drops(metrics["fp32"], metrics["int8_cpu"]),
        "latency_ms": latency,
        "speedup": latency["fp32"]["median_ms"] / latency["int8"]["median_ms"],
        "speedup_cpu": latency["fp32"]["median_ms"] / latency["int8_cpu"]["median_ms"],
        "float_nodes": float_nodes,
        "calibration": calibration,
    }


def drops(
    fp32: Dict[str, Optional[float]], int8: Dict[str, Optional[float]]
) -> Dict[str, Optional[float]]:
    """FP32 - INT8 in points per metric; None where the set leaves a metric undefined."""
    return {
        k: None if fp32[k] is None or int8[k] is None else round(100 * (fp32[k] - int8[k]), 3)
        for k in METRIC_NAMES
    }


def to_markdown(r: Dict[str, Any]) -> str:
    m, lat = r["metrics"], r["latency_ms"]
    lines = [
        "# INT8 calibration report",
        "",
        f"Calibration: {r['calibration']['method']}, {r['calibration']['images']} images of "
        f"`{r['calibration']['data']}` through the student noise (seed {r['calibration']['seed']}) "
        f"and the edge letterbox. Metrics on `{r['calibration']['val']}` through ONNX Runtime.",
        "",
        "`int8` is the deployable Q/DQ model (symmetric int8, for TensorRT); `int8_cpu` the same",
        "calibration with uint8 activations, ONNX Runtime's fast x86 path (CPU fallback).",
        "",
        "| metric | FP32 | INT8 | drop (points) | INT8-CPU | drop (points) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {show(m['fp32'][k])} | {show(m['int8'][k])} "
        f"| {show(r['drop_points'][k], spec='+.2f')} "
        f"| {show(m['int8_cpu'][k])} | {show(r['drop_points_cpu'][k], spec='+.2f')} |"
        for k in METRIC_NAMES
    ]
    lines += [
        "",
        "ONNX Runtime CPU latency, batch 1 (median ms): "
        + ", ".join(f"{k} {v['median_ms']:.1f}" for k, v in lat.items())
        + f"; speed-up INT8 {r['speedup']:.2f}x, INT8-CPU {r['speedup_cpu']:.2f}x.",
        "",
        f"Kept in float ({len(r['float_nodes'])} nodes): "
        + ", ".join(f"`{n}`" for n in r["float_nodes"]),
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: Path, report: Dict[str, Any]) -> None:
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_bytes(out_dir / "report.md", to_markdown(report).encode("utf-8"))
