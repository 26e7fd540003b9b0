"""ONNX Runtime CPU latency, FP32 vs Q/DQ INT8, same run, same input.

    python benchmarks/bench_int8.py --fp32 model.onnx --int8 cal/model.int8.onnx [--threads 1 2] [--json]

The two models are timed alternately in rounds, so background load hits both alike.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibration.latency import ort_latency
from edge.backends.onnxruntime_backend import OnnxRuntimeBackend


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fp32", type=Path, required=True)
    p.add_argument("--int8", type=Path, required=True)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    w, h = OnnxRuntimeBackend(args.fp32).info.input_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = []
    for t in args.threads:
        med = {"fp32": [], "int8": []}
        for _ in range(args.rounds):
            for k in ("fp32", "int8"):
                med[k].append(ort_latency(getattr(args, k), image, threads=t, min_seconds=2.0).median_ms)
        fp, q = float(np.median(med["fp32"])), float(np.median(med["int8"]))
        rows.append({"size": f"{w}x{h}", "threads": t, "fp32_ms": round(fp, 1), "int8_ms": round(q, 1),
                     "speedup": round(fp / q, 2)})
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'size':>10} {'threads':>7} {'FP32 ms':>8} {'INT8 ms':>8} {'speed-up':>8}")
    for r in rows:
        print(f"{r['size']:>10} {r['threads']:>7} {r['fp32_ms']:>8} {r['int8_ms']:>8} {r['speedup']:>8}")


if __name__ == "__main__":
    main()
