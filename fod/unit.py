"""On-the-unit verbs: `fod engine` (build and cache the TensorRT engine), `fod bench`
(latency per stage on this device), `fod check` (the preflight before a shift), `fod health`
(the running runtime's alarm, from its metrics)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Tuple

from edge.logsink import say
from fod.args import (
    add_max_age,
    non_negative_int,
    non_negative_number,
    positive_int,
    positive_number,
    size_wh,
)

log = logging.getLogger("fod")
BACKENDS = ("onnxruntime", "tensorrt", "torch")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "engine", help="build the TensorRT engine for a bundle on this unit (cached)"
    )
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder or .tar.gz")
    p.add_argument("--precision", choices=("int8", "fp16", "best"), default="int8")
    p.add_argument("--workspace", type=positive_int, default=1024, help="MB (default 1024)")
    p.add_argument("--dla", type=int, default=-1, metavar="N", help="DLA core (default: GPU)")
    p.add_argument("--max-batch", type=positive_int, default=1, help="largest batch (default 1)")
    p.add_argument("--cache", type=Path, help="engine folder (default: the service's or ~/.cache)")
    p.add_argument("--public-key", type=Path, help="require the bundle signed by this key")
    p.add_argument("--force", action="store_true", help="rebuild even if a matching one exists")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("bench", help="latency per stage on this device (trtexec-style report)")
    p.add_argument(
        "--bundle",
        required=True,
        help="bundle; for --backend torch a checkpoint or gfl-r18|gfl-r50|gfl-r101[-carafe]",
    )
    p.add_argument("--backend", choices=BACKENDS, default="onnxruntime")
    p.add_argument(
        "--precision", default="auto", help="as model.precision (torch: fp16 on CUDA, else fp32)"
    )
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--iters", type=positive_int, default=200, help="timed iterations, at least")
    p.add_argument("--warmup", type=non_negative_int, default=20, help="untimed iterations first")
    p.add_argument(
        "--duration", type=non_negative_number, default=0.0, help="and at least S seconds"
    )
    p.add_argument("--size", type=size_wh, help="torch: input WxH (default 1280x800)")
    p.add_argument(
        "--tiles",
        type=grid_spec,
        default=(1, 1),
        metavar="COLSxROWS",
        help="cut each frame into tiles, one model call each, as model.tiles (default 1x1)",
    )
    p.add_argument(
        "--tile-overlap", type=non_negative_int, default=32, help="px, as model.tile_overlap"
    )
    p.add_argument(
        "--mirror",
        action="store_true",
        help="run each frame again mirrored left-right and merge, as model.mirror (2x the calls)",
    )
    p.add_argument(
        "--frame-size",
        type=size_wh,
        help="synthetic frames' WxH, e.g. the camera's (default: the model input's)",
    )
    p.add_argument(
        "--source",
        default="synthetic",
        help="frames: synthetic (in memory, as a camera hands them over) or a camera source "
        "(file:VIDEO, v4l2:N, gst:PIPELINE)",
    )
    p.add_argument("--mono", action="store_true", help="grey frames, as a monochrome camera")
    p.add_argument(
        "--threads", type=non_negative_int, help="ONNX Runtime intra-op threads (0: its default)"
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="[BACKEND=]B",
        help="another bundle or backend in the same run (repeatable)",
    )
    p.add_argument("--engine-cache", default="", help="TensorRT engine folder")
    p.add_argument("--out", type=Path, help="folder for bench.json and latency_hist.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("check", help="preflight before a shift: bundle, model, camera, pins, ...")
    p.add_argument("--config", type=Path, required=True, help="line config (TOML)")
    p.add_argument(
        "--constraints",
        type=Path,
        help="the fleet's validated versions (pip freeze): fail on any package off them",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "health", help="is the runtime on this unit up with its alarm down? (its metrics)"
    )
    p.add_argument("--config", type=Path, required=True, help="line config (TOML)")
    p.add_argument(
        "--timeout", type=positive_number, default=4.0, help="seconds to wait for an answer"
    )
    add_max_age(p, "unhealthy")
    p.set_defaults(func=cmd_health)


def cmd_health(args: argparse.Namespace) -> int:
    """0 only when the runtime's metrics endpoint (the line config's) answers with fod_alarm
    0 and a recent supervisor round: a container health check, a monitoring probe. 1 with
    the reason otherwise."""
    from edge.config import load_config
    from edge.errors import FodError
    from edge.metrics import alarm_state, scrape_url

    m = load_config(args.config).metrics
    if not m.port:
        raise FodError(f"{args.config}: [metrics] port = 0: the runtime serves nothing to ask")
    why = alarm_state(m.port, m.address, args.timeout, args.max_age)
    if why:
        say(f"unhealthy: {why}")
        return 1
    print(f"healthy: {scrape_url(m.port, m.address)} fod_alarm 0, supervisor going round")
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from edge.backends.trt_build import ensure_engine
    from edge.bundle import open_bundle
    from edge.engine_cache import default_cache_dir

    cache = args.cache or default_cache_dir()
    with open_bundle(args.bundle, args.public_key) as b:
        path, meta, built = ensure_engine(
            b, args.precision, args.workspace, args.dla, args.max_batch, cache, args.force
        )
    if args.json:
        print(json.dumps({"engine": str(path), "built": built, **meta}))
    else:
        state = "built" if built else "up to date"
        key = meta["key"]
        print(
            f"{path}: {state} ({meta['plan']}; TensorRT {key['trt_version']}, {key['gpu']}"
            f"{', DLA ' + str(key['dla_core']) if key['dla_core'] >= 0 else ''})"
        )
    return 0


def _split_spec(spec: str, default_backend: str) -> Tuple[str, str]:
    backend, sep, target = spec.partition("=")
    if sep and backend in BACKENDS:
        return backend, target
    return default_backend, spec


def grid_spec(text: str) -> Tuple[int, int]:
    from edge.preprocess import parse_grid

    try:
        return parse_grid(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _bench_one(args: argparse.Namespace, backend_name: str, target: str) -> Dict[str, Any]:
    import contextlib

    from tqdm import tqdm

    from edge.bench import BenchConfig, run_bench, synthetic_frames
    from edge.device_info import device_info
    from edge.errors import FodError

    cfg = BenchConfig(
        args.batch,
        args.iters,
        args.warmup,
        args.duration,
        tiles=args.tiles,
        tile_overlap=args.tile_overlap,
        mirror=args.mirror,
    )
    if backend_name == "torch" and (args.tiles != (1, 1) or args.mirror):
        raise FodError("--tiles and --mirror time the edge path: use a bundle's backend, not torch")
    with contextlib.ExitStack() as stack:
        if backend_name == "torch":
            from training.bench_torch import TorchBackend

            backend = TorchBackend(target, args.size or (1280, 800))
            label, gpu, precision = backend.label, backend.gpu, backend.precision
            model = {"compiled": backend.compiled}
        else:
            from edge.backends.select import open_backend
            from edge.bundle import open_bundle

            b = stack.enter_context(open_bundle(Path(target)))
            backend, digest = open_backend(
                b,
                backend_name,
                args.precision,
                threads=args.threads,
                engine_cache=args.engine_cache,
            )
            label = f"{b.manifest.get('name', target)} {b.manifest.get('version', '')}".strip()
            gpu = getattr(getattr(backend, "ctx", None), "name", None)
            if backend_name == "tensorrt":  # what the engine was built as
                precision = backend.sidecar.get("plan", args.precision)
            else:  # the bundled file ONNX Runtime runs, and its kernels
                role = b.manifest["files"][Path(backend.path).name]["role"]
                precision = f"{role}, {backend.kernels} kernels"
            model = {"sha256": digest}
        stack.callback(backend.close)
        info = backend.info
        model.update(arch=info.arch, input=info.input_layout, size=list(info.input_size))
        if args.source == "synthetic":
            read = synthetic_frames(args.frame_size or info.input_size, args.mono)
        else:
            if args.frame_size is not None:
                raise FodError("--frame-size is for synthetic frames; a source has its own")
            from edge.sources import open_source

            src = stack.enter_context(contextlib.closing(open_source(args.source, args.mono)))

            def read() -> Any:
                f = src.read()
                return None if f is None else f.image

        total = cfg.warmup + cfg.iters
        bar = stack.enter_context(tqdm(total=total, desc=f"bench {label}", unit="it", disable=None))
        ran = [0]  # iterations done, for the message below (a bar off a terminal counts none)

        def step(n: int) -> None:
            ran[0] = n
            bar.update(1)

        try:
            res = run_bench(backend, info, read, cfg, progress=step)
        except EOFError:
            raise FodError(
                f"{args.source}: ran out of frames after {ran[0]} of at least {total} "
                f"iterations of {cfg.batch} frame(s) (--warmup {cfg.warmup}, --iters "
                f"{cfg.iters}): use a longer video, or fewer iterations"
            ) from None
    res.update(
        label=label,
        backend=backend_name,
        precision=precision,
        model=model,
        frames="grey" if args.mono else "rgb",
        device=device_info(gpu),
    )
    return res


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench_plot import latency_histogram
    from edge.fsutil import atomic_write_json

    runs: List[Dict[str, Any]] = []
    for spec in [f"{args.backend}={args.bundle}", *args.compare]:
        backend, target = _split_spec(spec, args.backend)
        runs.append(_bench_one(args, backend, target))
    for r in runs:
        for w in r["device"]["warnings"]:
            log.warning("%s", w)
    series = {f"{r['label']} [{r['backend']}]": r.pop("end_to_end_ms") for r in runs}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "bench.json", {"runs": runs})
        cut = "" if args.tiles == (1, 1) else f" ({args.tiles[0]}x{args.tiles[1]} tiles a frame)"
        cut += ", mirrored too" if args.mirror else ""
        title = f"end-to-end latency per batch of {args.batch}{cut}, {runs[0]['device']['board']}"
        latency_histogram(series, args.out / "latency_hist.png", title)
    if args.json:
        print(json.dumps({"runs": runs}))
        return 0
    _print_table(runs)
    if args.out is not None:
        print(f"wrote {args.out / 'bench.json'} and {args.out / 'latency_hist.png'}")
    return 0


def _print_table(runs: List[Dict[str, Any]]) -> None:
    from edge.bench import views_label

    cols = ("min_ms", "median_ms", "mean_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
    for r in runs:
        d = r["device"]
        w, h = r["frame_size"]
        cut = views_label(r["tiles"], r.get("mirror", False))
        print(
            f"{r['label']} [{r['backend']}, {r['precision']}, {r['model']['input']}, "
            f"batch {r['batch']}, {r['frames']} frames {w}x{h}{cut}] on {d['board']}"
            f"{', TensorRT ' + d['tensorrt'] if d['tensorrt'] else ''}"
            f"{', ' + d['gpu'] if d['gpu'] else ''}: "
            f"{r['fps']:.1f} frames/s, {r['iterations']} iterations"
        )
        # runs: the decision stage is timed once a container, not once a frame
        print(f"  {'stage':<14}" + "".join(f"{c[:-3]:>9}" for c in cols) + "  (ms)   runs")
        for stage, s in r["stages"].items():
            print(f"  {stage:<14}" + "".join(f"{s[c]:>9.3f}" for c in cols) + f"{s['runs']:>12}")


def cmd_check(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.preflight import preflight, summary

    checks = preflight(load_config(args.config), constraints=args.constraints)
    s = summary(checks)
    if args.json:
        print(json.dumps(s))
    else:
        for c in checks:
            print(f"{c.status.upper():<5} {c.name:<8} {c.detail}")
        print("ready for the shift" if s["ok"] else f"NOT ready: {', '.join(s['failures'])}")
    return 0 if s["ok"] else 1
