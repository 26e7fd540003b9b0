"""The INT8-vs-FP32 report: accuracy, drop, CPU latency, what stayed float, what calibrated it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from edge.fsutil import atomic_write_bytes, atomic_write_json

METRIC_NAMES = ("ap50", "ap", "ap_small", "ar", "ar_small")


def build_report(
    fp32: Dict[str, float],
    int8: Dict[str, float],
    latency_fp32: Dict[str, float],
    latency_int8: Dict[str, float],
    float_nodes: List[str],
    calibration: Dict[str, Any],
) -> Dict[str, Any]:
    return {
        "metrics": {"fp32": fp32, "int8": int8},
        "drop_points": {k: round(100 * (fp32[k] - int8[k]), 3) for k in METRIC_NAMES},
        "latency_ms": {"fp32": latency_fp32, "int8": latency_int8},
        "speedup": latency_fp32["median_ms"] / latency_int8["median_ms"],
        "float_nodes": float_nodes,
        "calibration": calibration,
    }


def to_markdown(r: Dict[str, Any]) -> str:
    m, d = r["metrics"], r["drop_points"]
    lines = [
        "# INT8 calibration report",
        "",
        f"Calibration: {r['calibration']['method']}, {r['calibration']['images']} images of "
        f"`{r['calibration']['data']}` through the student noise (seed {r['calibration']['seed']}) "
        "and the edge letterbox.",
        "",
        "| metric | FP32 | INT8 | drop (points) |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {m['fp32'][k]:.4f} | {m['int8'][k]:.4f} | {d[k]:+.2f} |" for k in METRIC_NAMES
    ]
    lf, li = r["latency_ms"]["fp32"], r["latency_ms"]["int8"]
    lines += [
        "",
        f"ONNX Runtime CPU latency, batch 1: FP32 {lf['median_ms']:.1f} ms, "
        f"INT8 {li['median_ms']:.1f} ms "
        f"(median), speed-up {r['speedup']:.2f}x.",
        "",
        f"Kept in float ({len(r['float_nodes'])} nodes): "
        + ", ".join(f"`{n}`" for n in r["float_nodes"]),
        "",
    ]
    return "\n".join(lines)


def write_report(out_dir: Path, report: Dict[str, Any]) -> None:
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_bytes(out_dir / "report.md", to_markdown(report).encode("utf-8"))
