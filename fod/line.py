"""Line verbs: `fod simulate`, `fod audit verify`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from fod.args import positive_int

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "demo"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="synthetic containers through the whole runtime, in real time"
    )
    p.add_argument(
        "--bundle", type=Path, default=DEMO_BUNDLE, help="model bundle (default: models/demo)"
    )
    p.add_argument(
        "--sequences", type=Path, help="folder from `fod synth` (default: made on the fly)"
    )
    p.add_argument("--containers", type=positive_int, default=20)
    p.add_argument("--rate", type=float, default=60.0, help="containers per minute (default 60)")
    p.add_argument(
        "--frames", type=positive_int, default=8, help="frames per container (default 8)"
    )
    p.add_argument(
        "--delay-ms",
        type=float,
        help="trigger-to-gate delay in ms (default: the config's 600, set for a Jetson)",
    )
    p.add_argument(
        "--faults", help="e.g. camera_drop=0.02,corrupt=0.02,backend_error=0.02,slow=0.02"
    )
    p.add_argument("--config", type=Path, help="line config TOML (GPIO is always mock here)")
    p.add_argument("--out", type=Path, default=Path("sim-out"), help="audit DB, summary, timeline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--knapp",
        type=positive_int,
        metavar="R",
        help="Knapp study: inspect every container R times (fresh sensor noise each time)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("knapp", help="Knapp-style container-level study from an audit trail")
    p.add_argument("--audit", type=Path, required=True, help="audit folder of repeated inspections")
    p.add_argument("--truth", type=Path, required=True, help="sequences.json from `fod synth`")
    p.add_argument(
        "--out", type=Path, default=Path("knapp"), help="knapp.md, knapp.json, knapp.png"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_knapp)

    p = sub.add_parser(
        "run", help="run the line: camera, triggers, model, ejector (until Ctrl-C/SIGTERM)"
    )
    p.add_argument(
        "--config", type=Path, required=True, help="line config TOML (see edge/line.example.toml)"
    )
    p.add_argument(
        "--rate", type=float, help="timer triggers per minute when there is no trigger pin"
    )
    p.add_argument(
        "--max-containers", type=positive_int, help="stop after this many (commissioning, tests)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("audit", help="`fod audit verify DB_FOLDER`: check the hash chain")
    p.add_argument("action", choices=["verify"])
    p.add_argument("folder", type=Path, help="audit folder (audit-*.db)")
    p.set_defaults(func=cmd_audit)


def cmd_simulate(args: argparse.Namespace) -> int:
    import functools
    import random

    from gpiozero.pins.mock import MockFactory

    from edge.app import line_runtime
    from edge.bundle import open_bundle
    from edge.config import LineConfig, load_config
    from edge.errors import FodError
    from edge.fsutil import atomic_write_json
    from edge.simulate import FaultyBackend, load_sequences, parse_faults, run_line, summarize
    from edge.sources import open_source
    from edge.timeline import draw_timeline

    faults = parse_faults(args.faults)
    if args.rate <= 0:
        raise FodError(f"--rate must be positive, got {args.rate}")
    base = load_config(args.config) if args.config else LineConfig()
    if args.bundle == DEMO_BUNDLE and not DEMO_BUNDLE.exists():
        raise FodError(
            f"{DEMO_BUNDLE}: the demo bundle ships with a source checkout (models/demo), "
            "not with a wheel; pass --bundle B from `fod bundle`"
        )
    with open_bundle(args.bundle) as b:
        size = tuple(b.manifest["input_size"])
    args.out.mkdir(parents=True, exist_ok=True)
    seq_dir = args.sequences
    if seq_dir is None:
        from training.data.synth import SynthConfig
        from training.data.synth_writer import write_synthetic_set

        seq_dir = args.out / f"sequences-{size[0]}x{size[1]}-f{args.frames}-s{args.seed}"
        if not (seq_dir / "sequences.json").exists():
            write_synthetic_set(
                seq_dir,
                0,
                min(args.containers, 16),
                SynthConfig(width=size[0], height=size[1], frames=args.frames),
                args.seed,
                progress=False,
            )
    containers = load_sequences(seq_dir)
    cfg = dataclasses.replace(
        base,
        # Synthetic containers are monochrome, like the line's camera.
        camera=dataclasses.replace(base.camera, frames=args.frames, mono=True),
        model=dataclasses.replace(base.model, bundle=str(args.bundle)),
        gpio=dataclasses.replace(
            base.gpio, pin_factory="mock", delay_ms=args.delay_ms or base.gpio.delay_ms
        ),
        audit=dataclasses.replace(base.audit, folder=args.out / "audit", min_free_bytes=0),
        metrics=dataclasses.replace(
            base.metrics, port=0 if args.config is None else base.metrics.port
        ),
    )
    rng = random.Random(args.seed)
    stall = cfg.gpio.delay_ms / 1000
    wrap = (lambda be: FaultyBackend(be, faults, stall, rng)) if faults else None
    count = args.knapp * len(containers) if args.knapp else args.containers
    with line_runtime(cfg, MockFactory(), wrap) as rt:
        noise = 2.0 if args.knapp else 0.0  # grey levels: re-inspections see fresh sensor noise
        reader = functools.partial(open_source, mono=cfg.camera.mono)
        run_line(rt, containers, count, args.rate, reader, faults, args.seed, noise)
        rt.io.pulses.wait_idle(timeout=cfg.gpio.delay_ms / 1000 + 2)  # let scheduled pulses land
        outcomes = list(rt.outcomes)
        fired = list(rt.io.pulses.fired)
        missed = len(rt.io.pulses.missed)
    lateness = [(a - s) * 1000 for s, a in fired]
    summary = summarize(outcomes, lateness)
    summary["rate_per_min"] = args.rate
    summary["frames"] = args.frames
    summary["pulses_missed_gate"] = missed  # decided after the gate: the container went past
    if args.knapp:
        from edge.knapp import knapp, write_report

        res = knapp(
            [(o.container_id.split("-")[0], o.reject) for o in outcomes],
            {c.id: c.label for c in containers},  # already read: no second parse
        )
        write_report(res, args.out)
        summary["knapp"] = {k: v for k, v in res.to_dict().items() if k != "containers"}
    atomic_write_json(args.out / "summary.json", summary)
    draw_timeline(outcomes, fired, cfg.gpio.delay_ms / 1000, args.out / "timeline.png")
    if args.json:
        print(json.dumps(summary))
    else:
        lat = summary["latency_ms"]
        print(
            f"{summary['containers']} containers: {summary['accepted']} accepted, "
            f"{summary['rejected']} rejected, "
            f"faults {summary['faults'] or 'none'}; detection rate {summary['detection_rate']}, "
            f"false-reject rate {summary['false_reject_rate']}; decision p50/p99 "
            f"{lat['decision_p50']:.0f}/{lat['decision_p99']:.0f} ms; "
            f"deadline misses {summary['deadline_misses']}; "
            f"audit {args.out / 'audit'}, timeline {args.out / 'timeline.png'}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge.app import run_forever
    from edge.config import load_config

    cfg = load_config(args.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # systemd stops with SIGTERM: finish, release, exit
        signal.signal(sig, lambda *_: stop.set())
    rt = run_forever(cfg, stop, args.rate, args.max_containers)
    counts = {
        "containers": len(rt.outcomes),
        "rejected": sum(o.reject for o in rt.outcomes),
        "faults": sum(o.fault is not None for o in rt.outcomes),
        "alarm": rt.alarm,
    }
    human = (
        f"{counts['containers']} containers, {counts['rejected']} rejected, "
        f"{counts['faults']} faults"
    )
    print(json.dumps(counts) if args.json else human)
    return 0


def cmd_knapp(args: argparse.Namespace) -> int:
    from edge.knapp import decisions_from_audit, knapp, truth_from_sequences, write_report

    res = knapp(decisions_from_audit(args.audit), truth_from_sequences(args.truth))
    write_report(res, args.out)
    if args.json:
        print(json.dumps({k: v for k, v in res.to_dict().items() if k != "containers"}))
    else:
        print(
            f"reject-zone efficiency {res.reject_zone_efficiency:.3f}, detection probability "
            f"{res.detection_probability:.3f}, false-reject rate {res.false_reject_rate:.3f}; "
            f"see {args.out / 'knapp.md'}"
        )
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from edge.audit import verify

    r = verify(args.folder)
    print(
        f"{args.folder}: {r.rows} containers in {r.files} file(s), "
        f"seq {r.first_seq}..{r.last_seq}: chain intact"
    )
    return 0
