"""ONNX Runtime CPU latency of FP32 and INT8 models, same run, same input.

    python benchmarks/bench_int8.py --fp32 model.onnx --int8 cal/model.int8.onnx \\
        --int8-cpu cal/model.int8-cpu.onnx [--threads 1 2] [--json]

The models are timed alternately in rounds, so background load hits them alike.
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
    p.add_argument("--int8", type=Path, required=True, help="Q/DQ for TensorRT (symmetric int8)")
    p.add_argument("--int8-cpu", type=Path, help="Q/DQ with uint8 activations (ORT's x86 path)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    models = {"fp32": args.fp32, "int8": args.int8}
    if args.int8_cpu:
        models["int8_cpu"] = args.int8_cpu
    w, h = OnnxRuntimeBackend(args.fp32).info.input_size
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    rows = []
    for t in args.threads:
        med = {k: [] for k in models}
        for _ in range(args.rounds):
            for k, path in models.items():
                med[k].append(ort_latency(path, image, threads=t, min_seconds=2.0).median_ms)
        row = {"size": f"{w}x{h}", "threads": t}
        for k in models:
            row[f"{k}_ms"] = round(float(np.median(med[k])), 1)
        for k in models:
            if k != "fp32":
                row[f"{k}_speedup"] = round(row["fp32_ms"] / row[f"{k}_ms"], 2)
        rows.append(row)
    if args.json:
        print(json.dumps(rows))
        return
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
