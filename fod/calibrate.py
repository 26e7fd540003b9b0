"""Glue for `fod calibrate` and `fod bundle`: the CLI is the one place allowed to join
training.data (images, student noise) to calibration (no torch) and edge."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np


def run_calibration(args: argparse.Namespace) -> Dict[str, Any]:
    import onnx

    from calibration.latency import ort_latency
    from calibration.noise import NoiseConfig
    from calibration.quantize import (
        StreamingReader,
        quantize_qdq,
        require_float,
        require_qdq_opset,
    )
    from calibration.report import build_report, write_report
    from calibration.trt_cache import write_cache
    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.errors import DataError
    from edge.fsutil import atomic_write_json, sha256_file, staged_dir
    from edge.preprocess import letterbox
    from training.data.augment import noisy_letterboxed
    from training.data.dataset import CocoDetection, ImageFolder, open_images, require_readable
    from training.evaluation import evaluate_onnx, require_classes

    info = OnnxRuntimeBackend(args.onnx).info  # validates inputs, outputs and metadata
    graph = onnx.load(str(args.onnx), load_external_data=False)
    require_float(graph, args.onnx)
    require_qdq_opset(graph, args.onnx)
    data = open_images(args.data)  # a COCO set, or a line's unlabelled recordings
    if isinstance(data, ImageFolder) and args.val is None:
        raise DataError(
            f"{args.data}: images without labels: pass a labelled --val for the metrics"
        )
    if len(data) == 0:
        raise DataError(f"{args.data}: no images to calibrate with")
    if len(data) < args.images:
        raise DataError(f"{args.data}: {len(data)} images, fewer than --images {args.images}")
    val = CocoDetection(args.val) if args.val is not None else data
    # Before calibrating: without boxes, INT8 and FP32 would both score 0, a drop of 0.
    val.require_boxes("INT8's accuracy cannot be compared with FP32's on it; pass a labelled --val")
    require_classes(args.onnx, info.class_names, val)  # before the pass, not after it
    chosen = np.random.default_rng(args.seed).permutation(len(data))[: args.images]
    # Every image the pass and the metrics will read, readable: not a stop after the pass.
    if val is data:
        require_readable(data, range(len(data)), f"images of {args.data}")
    else:
        require_readable(data, chosen, "calibration images")
        require_readable(val, range(len(val)), "--val images")
    noise = NoiseConfig()
    records: List[Dict[str, Any]] = []

    def images() -> Iterator[np.ndarray]:
        for k, i in enumerate(chosen):
            # One seed per calibration image: the set is reproducible from (seed, k) alone.
            rng = np.random.default_rng(np.random.SeedSequence([args.seed, int(k)]))
            img, draw = noisy_letterboxed(data.image(int(i)), info.input_size, noise, rng)
            if len(records) < len(chosen):
                records.append(
                    {
                        "file": data.file_name(int(i)),
                        "seed": [args.seed, int(k)],
                        "noise": draw.__dict__,
                    }
                )
            yield img

    with staged_dir(args.out) as tmp, tempfile.TemporaryDirectory() as work:
        int8, cpu = tmp / "model.int8.onnx", tmp / "model.int8-cpu.onnx"
        keep = None if args.keep_float is None else list(args.keep_float)
        ranges = Path(work) / "ranges"  # one calibration pass, two quantized variants
        reader = StreamingReader(images, len(chosen), layout=info.input_layout)
        float_nodes = quantize_qdq(args.onnx, int8, reader, args.method, keep, True, ranges)
        reader.close()
        quantize_qdq(args.onnx, cpu, reader, args.method, keep, False, ranges)
        n_cache = write_cache(tmp / "calib.cache", onnx.load(str(int8)), args.trt_version)
        outputs = {"int8": int8, "int8_cpu": cpu, "cache": tmp / "calib.cache"}
        models = {"fp32": args.onnx, "int8": int8, "int8_cpu": cpu}
        metrics = {k: evaluate_onnx(p, val).to_dict() for k, p in models.items()}
        probe, _ = letterbox(val[0].image, info.input_size)
        latency = {k: ort_latency(p, probe).to_dict() for k, p in models.items()}
        report = build_report(
            metrics,
            latency,
            float_nodes,
            {
                "method": args.method,
                "images": len(chosen),
                "data": str(args.data),
                "val": str(val.root),
                "seed": args.seed,
                "noise": noise.__dict__,
                "cache_tensors": n_cache,
                "source_onnx": str(args.onnx),
                # What was measured, so `fod bundle make` can refuse files of another run.
                "source_checkpoint_sha256": info.checkpoint_sha256,
                "sha256": {k: sha256_file(p) for k, p in outputs.items()},
            },
        )
        atomic_write_json(tmp / "calibration_set.json", {"images": records})
        write_report(tmp, report)
    return report


# Bundle roles and the model each takes (`quantized_kind`): what `fod calibrate` writes.
MODEL_ROLES = (
    ("fp32", "--onnx", "float"),
    ("int8", "--int8", "int8"),
    ("int8_cpu", "--int8-cpu", "uint8"),
)
MODEL_KINDS = {
    "float": "a float model (the FP32 ONNX from fod export)",
    "int8": "an int8 Q/DQ model (fod calibrate's model.int8.onnx, for TensorRT)",
    "uint8": "a uint8-activation model (fod calibrate's model.int8-cpu.onnx, for ONNX Runtime)",
    "mixed": "a model with both int8 and uint8 activations",
    "unknown": "a quantized model of no kind read here (no QuantizeLinear with an initializer)",
}


def bundle_meta(name: str, version: str, files: Dict[str, Path]) -> Dict[str, Any]:
    """Manifest fields: what the unit needs to run the model and what it was measured at.

    `files` maps bundle roles to paths. Its models must be one export of one checkpoint,
    and a calibration report must have measured the INT8 models and cache bundled with it:
    the manifest carries the report's metrics as the bundle's own."""
    from edge.backends.onnxruntime_backend import OnnxRuntimeBackend
    from edge.bundle import model_fields, model_mismatches
    from edge.errors import FodError
    from edge.model_info import quantized_kind, read_model_info
    from edge.postprocess import PostprocessConfig
    from fod import __version__

    models = [files[r] for r in ("fp32", "int8_cpu", "int8") if r in files]
    for role, flag, kind in MODEL_ROLES:  # a swapped --int8 / --int8-cpu reaches no unit
        if role in files:
            try:
                data = files[role].read_bytes()
            except OSError as e:
                raise FodError(f"{files[role]}: cannot read the model: {e}") from None
            found = quantized_kind(data, str(files[role]))
            if found != kind:
                raise FodError(
                    f"{files[role]}: given as {flag}, which takes {MODEL_KINDS[kind]}; "
                    f"this is {MODEL_KINDS[found]}"
                )
    fields = model_fields(OnnxRuntimeBackend(models[0]).info)  # the first loads in full
    for path in models[1:]:
        bad = model_mismatches(read_model_info(path), fields, str(models[0]))
        if bad:
            raise FodError(f"{path}: not the model {models[0]} is: " + "; ".join(bad))
    metrics = None
    if "report" in files:
        report = files["report"]
        try:
            doc = json.loads(report.read_text(encoding="utf-8"))
            metrics, calibration = doc["metrics"], doc.get("calibration") or {}
            if not isinstance(calibration, dict):
                raise ValueError("its 'calibration' is not an object")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FodError(f"{report}: not a calibration report: {e!r}") from None
        check_report(report, calibration, files, fields["source_checkpoint_sha256"])
    return {
        "name": name,
        "version": version,
        "made_by": f"pharma-fod {__version__}",
        **fields,
        "thresholds": PostprocessConfig().__dict__,
        "metrics": metrics,
    }


def check_report(
    report: Path, calibration: Dict[str, Any], files: Dict[str, Path], checkpoint: str
) -> None:
    """Refuse a report that measured another model than the one bundled with it."""
    from edge.errors import FodError
    from edge.fsutil import sha256_file
    from edge.logsink import say

    source = calibration.get("source_checkpoint_sha256")
    digests = calibration.get("sha256")
    if source is None or not isinstance(digests, dict):
        say(f"fod bundle make: {report} names no model it measured (an older report); "
            "its metrics are taken on trust")  # fmt: skip
        return
    if source != checkpoint:
        raise FodError(
            f"{report}: measured a model of checkpoint {str(source)[:12]}, the bundled "
            f"models come from {checkpoint[:12]}: its metrics are not theirs"
        )
    for role in ("int8", "int8_cpu", "cache"):
        if role in files and role in digests and sha256_file(files[role]) != digests[role]:
            raise FodError(
                f"{files[role]}: not the {role} file {report} measured (sha256 differs); "
                "bundle the files of one `fod calibrate` run"
            )
