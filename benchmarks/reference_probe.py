"""Which partly blind engines a bundle's reference frames catch: the bundle's model with
the scores of one FPN level, one class or all of them scaled by --factor (finite, in range,
merely low: outputs no per-frame check can tell from an empty frame), each judged by the
bundle's reference rule as `fod check` and the self-test rounds judge it.

    python benchmarks/reference_probe.py models/demo [--factor 0.2] [--model FILE]

--model: one of the bundle's models to run (default: its INT8 CPU model, else INT8, else
FP32), e.g. the FP32 model a TensorRT unit would build from.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Tuple

import numpy as np

from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
from edge.bundle import open_bundle
from edge.detector import EdgeDetector
from edge.reference import load_reference, reference_rule, sightings


class Dimmed:
    """A backend whose scores [N, A, C] are scaled by `factor` at anchors `where` and
    classes `classes`."""

    def __init__(self, backend: OnnxRuntimeBackend, where: slice, classes, factor: float):
        self.backend, self.info = backend, backend.info
        self.where, self.classes, self.factor = where, classes, np.float32(factor)

    def infer(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        boxes, scores = self.backend.infer(images)
        scores = scores.copy()
        scores[:, self.where, self.classes] *= self.factor
        return boxes, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--factor", type=float, default=0.2)
    ap.add_argument("--model", type=Path)
    args = ap.parse_args()
    with open_bundle(args.bundle) as b:
        ref_path = b.file("reference")
        if ref_path is None:
            raise SystemExit(f"{args.bundle}: no reference frames in the bundle")
        model = args.model or next(p for p in map(b.file, ("int8_cpu", "int8", "fp32")) if p)
        ref, meta = load_reference(ref_path), b.manifest["reference"]
        with OnnxRuntimeBackend(model) as be:
            rule = reference_rule(meta, ref, be.info.class_names, str(ref_path))
            edges = np.cumsum([0, *be.info.level_counts])
            cases = [("healthy", slice(None), slice(None), 1.0)]
            cases += [
                (f"level {i}", slice(int(edges[i]), int(edges[i + 1])), slice(None), args.factor)
                for i in range(len(be.info.level_counts))
            ]
            cases += [
                (name, slice(None), c, args.factor) for c, name in enumerate(be.info.class_names)
            ]
            cases.append(("every class", slice(None), slice(None), args.factor))
            print(f"{model.name}, scores x{args.factor} where named:")
            for what, where, classes, factor in cases:
                engine = Dimmed(be, where, classes, factor)
                ok, line = rule.judge(sightings(EdgeDetector(engine, be.info).detect, ref), ref)
                print(f"  {what:12s} {'passes' if ok else 'REFUSED'}: {line}")


if __name__ == "__main__":
    main()
