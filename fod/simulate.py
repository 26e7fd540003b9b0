"""`fod simulate`: the simulated line, judged by what physically happened at the gate."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from edge.logsink import say
from fod.args import non_negative_int, positive_int
from fod.line import DEMO_BUNDLE
from training.data.synth_looks import LOOK_CHOICES

log = logging.getLogger("fod")


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
    p.add_argument(
        "--look",
        choices=LOOK_CHOICES,
        default="classic",
        help="look of the containers made on the fly (as `fod synth --look`; default classic)",
    )
    p.add_argument("--containers", type=positive_int, default=20)
    p.add_argument(
        "--rate",
        type=float,
        help="containers per minute (default: 30, or fewer where the model, timed at the "
        "start, would be over 70%% busy with them and its reference rounds)",
    )
    p.add_argument(
        "--frames", type=positive_int, default=8, help="frames per container (default 8)"
    )
    p.add_argument(
        "--delay-ms",
        type=float,
        help="trigger-to-gate delay in ms (default 3000 here: a CPU runs the model 10-20x "
        "slower than a Jetson's GPU; a --config's own delay otherwise)",
    )
    p.add_argument(
        "--faults",
        help="per-container probabilities, e.g. camera_drop=0.2,nan=0.1 or all=0.05; kinds: "
        "camera_drop corrupt black frozen stall nan backend_error slow stale_output "
        "thread_crash gpio_error bounce audit_error; machine faults, not in all (a run where "
        "one passes a container goes red): relay_welded gpio_hang gpio_off_error; blind (the "
        "engine blind from then on, not in all)",
    )
    p.add_argument("--config", type=Path, help="line config TOML (GPIO is always mock here)")
    p.add_argument("--out", type=Path, default=Path("sim-out"), help="audit DB, summary, timeline")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument(
        "--knapp",
        type=positive_int,
        metavar="R",
        help="Knapp study: inspect every container R times (fresh sensor noise each time)",
    )
    p.add_argument(
        "--wiring", choices=["accept", "reject"], help="gpio.energise_to (default: the config's)"
    )
    p.add_argument(
        "--alarm-output",
        choices=["alarm", "ready", "heartbeat"],
        help="gpio.alarm_energise_to (default: the config's): the alarm output energised on an "
        "alarm, or while the unit runs with no alarm, or toggled then",
    )
    p.add_argument("--append", action="store_true", help="add to an existing audit in --out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_simulate)


def _sim_config(args: argparse.Namespace, base, frame_size=None):
    """The simulation's line config: mock pins with a trigger input, a fresh audit folder;
    overrides go through the same validation as a config file. `frame_size` (w, h): the
    sequences' camera, where the config names none."""
    from edge.config import parse_config

    data = {
        "camera": {"frames": args.frames, "mono": True},  # synthetic containers are grey
        "model": {"bundle": str(args.bundle), "allow_unsigned": base.model.public_key is None},
        "gpio": {"pin_factory": "mock", "trigger_pin": base.gpio.trigger_pin or "GPIO22"},
        "audit": {"folder": str(args.out / "audit"), "min_free_bytes": 0},
        "metrics": {"port": base.metrics.port if args.config else 0},
    }
    if frame_size and not (base.camera.width or base.camera.height):
        data["camera"].update(width=frame_size[0], height=frame_size[1])
    if args.delay_ms is not None or not args.config:
        data["gpio"]["delay_ms"] = args.delay_ms or 3000.0
    if args.wiring:
        data["gpio"]["energise_to"] = args.wiring
    if args.alarm_output:
        data["gpio"]["alarm_energise_to"] = args.alarm_output
    merged = {}
    for name in (
        "camera",
        "model",
        "decision",
        "postprocess",
        "gpio",
        "timing",
        "audit",
        "metrics",
    ):
        sec = dataclasses.asdict(getattr(base, name))
        sec = {k: (str(v) if isinstance(v, Path) else v) for k, v in sec.items() if v is not None}
        sec.update(data.get(name, {}))
        merged[name] = sec
    return parse_config(merged, "fod simulate")


def cmd_simulate(args: argparse.Namespace) -> int:
    import functools

    from gpiozero.pins.mock import MockFactory

    from edge.app import line_runtime
    from edge.audit import read_anchor
    from edge.bundle import open_bundle
    from edge.config import LineConfig, load_config
    from edge.errors import FodError
    from edge.faults import FaultyBackend, FaultyPin, Injector, audit_authorizer, parse_faults
    from edge.fsutil import atomic_write_json
    from edge.preflight import FAIL, check_decision
    from edge.sim_camera import SimCamera
    from edge.simulate import (
        alarm_intervals,
        attach_audit,
        auto_rate,
        check_videos,
        gate_model,
        load_sequences,
        machine_fault_violations,
        out_of_reach,
        pin_intervals,
        run_line,
        safety_violations,
    )
    from edge.sources import open_source
    from edge.timeline import draw_timeline

    faults = parse_faults(args.faults)
    if args.rate is not None and not (args.rate > 0 and args.rate < 1e5):
        raise FodError(f"--rate must be a positive number per minute, got {args.rate}")
    if args.delay_ms is not None and not 0 < args.delay_ms <= 60_000:
        raise FodError(f"--delay-ms must be in (0, 60000], got {args.delay_ms}")
    base = load_config(args.config) if args.config else LineConfig()
    if args.bundle == DEMO_BUNDLE and not DEMO_BUNDLE.exists():
        raise FodError(
            f"{DEMO_BUNDLE}: the demo bundle ships with a source checkout (models/demo), "
            "not with a wheel; pass --bundle B from `fod bundle`"
        )
    if (args.out / "audit").exists() and not args.append:
        raise FodError(f"{args.out / 'audit'}: exists; pass a new --out, or --append to add to it")
    with open_bundle(args.bundle) as b:
        size = tuple(b.manifest["input_size"])
    seq_dir = args.sequences
    videos = None  # (w, h) of the set's videos
    if seq_dir is not None:  # checked before anything is written: a bad set leaves no --out
        containers = load_sequences(seq_dir)
        shown = containers if args.knapp else containers[: args.containers]  # what the run plays
        videos = check_videos(seq_dir / "sequences.json", shown, args.frames)
    cfg = _sim_config(args, base, videos)
    camera_size = (cfg.camera.width or size[0], cfg.camera.height or size[1])
    if videos is not None and videos != camera_size:  # --config names a camera of its own
        raise FodError(
            f"{seq_dir / 'sequences.json'}: its videos are {videos[0]}x{videos[1]}, the camera "
            f"of {args.config} takes {camera_size[0]}x{camera_size[1]} (camera.width/height): "
            "every frame would be rejected as corrupt"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    if seq_dir is None:
        from training.data.synth import SynthConfig
        from training.data.synth_writer import write_synthetic_set

        look = "" if args.look == "classic" else f"-{args.look}"
        w, h = camera_size
        seq_dir = args.out / f"sequences-{w}x{h}-f{args.frames}-s{args.seed}{look}"
        if not (seq_dir / "sequences.json").exists():
            write_synthetic_set(
                seq_dir,
                0,
                min(args.containers, 16),
                SynthConfig(width=w, height=h, frames=args.frames, look=args.look),
                args.seed,
                progress=False,
            )
        containers = load_sequences(seq_dir)  # made here for this camera and --frames
    decision = check_decision(cfg)
    if decision.status == FAIL:  # an experiment here; `fod run` refuses it
        log.warning("%s", decision.detail)
    injector = Injector(faults, args.seed)
    factory = MockFactory(pin_class=FaultyPin)
    fb = cfg.gpio.gate_feedback_pin  # wired to the gate relay's auxiliary contact
    gate = factory.pin(cfg.gpio.ejector_pin, input_pin=factory.pin(fb) if fb else None)
    gate.injector = injector  # GPIO faults on the gate output
    trigger = factory.pin(cfg.gpio.trigger_pin)
    delay_s, pulse_s = cfg.gpio.delay_ms / 1000, cfg.gpio.pulse_ms / 1000
    camera = SimCamera(
        functools.partial(open_source, mono=True),
        injector,
        stall_s=1.5 * delay_s,
        noise=2.0 if args.knapp else 0.0,
        seed=args.seed,
    )
    count = args.knapp * len(containers) if args.knapp else args.containers
    outcomes: list = []
    runtimes: list = []
    frame_ms = None  # with no --rate: a frame's model time here, which the rate follows

    def holding(stage):  # which container the stage works on (the runtime exists by then)
        return runtimes[0].holding(stage) if runtimes else None

    before = read_anchor(cfg.audit.folder)  # with --append: judge only this run's rows
    t_clear = time.monotonic()
    for name in (cfg.gpio.ejector_pin, cfg.gpio.alarm_pin):
        if name:
            factory.pin(name).clear_states()
    try:
        with line_runtime(
            cfg,
            factory,
            lambda be: FaultyBackend(be, injector, 0.6 * delay_s, lambda: holding("inference")),
            outcomes.append,
            audit_authorizer=(
                audit_authorizer(injector, lambda: holding("audit"))
                if "audit_error" in faults
                else None
            ),
        ) as rt:
            runtimes.append(rt)
            decide = rt.decide

            def crashing_decide(*a):
                if injector.take("thread_crash", rt.holding("inference")):
                    raise RuntimeError("injected crash in the decision code")
                return decide(*a)

            rt.decide = crashing_decide
            if args.rate is None:
                args.rate, frame_s = auto_rate(rt, cfg.camera.frames)
                frame_ms = round(frame_s * 1e3, 3)
                log.info("rate %s a minute: the model takes %.0f ms a frame", args.rate, frame_ms)
                why = out_of_reach(cfg.camera.frames, frame_s, delay_s)
                if why is not None:  # a Jetson's config on a CPU, say
                    log.warning("%s", why)
            phys = run_line(rt, trigger, camera, injector, containers, count, args.rate)
            rt.drain(timeout=60 + count * 2)
            # The line runs on until the last container is past the gate: what the gate does
            # to it (a gate stuck energised too) happens, and goes on record, with the
            # runtime still running.
            if phys:
                time.sleep(max(0.0, phys[-1].edge_t + delay_s + pulse_s + 0.1 - time.monotonic()))
            rt.io.pulses.wait_idle(timeout=delay_s + 2)
            counts, failed, alarm_reasons = dict(rt.counts), rt.failed, list(rt.alarm_reasons)
            rounds = dict(rt.self_test.rounds) if rt.self_test is not None else None
            bounces = rt.io.debounce.bounces
            retried = rt.io.pulses.counts["retried"]
            t_end = time.monotonic()  # the runtime closes after: its outputs' off is no alarm
    finally:
        camera.close()
    gate_on = pin_intervals(factory.pin(cfg.gpio.ejector_pin), t_clear)
    gate_model(phys, gate_on, delay_s, pulse_s, cfg.gpio.energise_to)
    ghosts = attach_audit(phys, cfg.audit.folder, before[0] if before else 0)
    alarm_on = (
        alarm_intervals(factory.pin(cfg.gpio.alarm_pin), t_clear, t_end, cfg.gpio.alarm_energise_to)
        if cfg.gpio.alarm_pin
        else []
    )
    summary = _summary(args, cfg, phys, outcomes, counts, injector, ghosts, alarm_on)
    summary.update(
        failed=failed,
        alarm_reasons=alarm_reasons[:5],
        # rounds of the reference frames while the line ran, by result (None: not run)
        reference_rounds=rounds,
        bounces_filtered=bounces,
        bounce_edges=injector.bounce_edges,
        gate_write_retries=retried,  # pulses written again after a failed write, then fired
        sequences=str(seq_dir),
        # A frame larger than the model's input reaches it shrunk (letterboxed), and its
        # particles with it: what the detection rate is read against.
        frame_size=list(camera_size),
        model_input=list(size),
        tiles=cfg.model.tiles,  # "1x1": letterboxed whole
        rate_from_frame_ms=frame_ms,
    )
    summary["violations"] = safety_violations(summary)
    # Under machine faults (red by the above whenever one passes a container): on record,
    # alarmed. What `benchmarks/fault_matrix.sh` checks for those rows.
    summary["machine_violations"] = machine_fault_violations(summary)
    if args.knapp:
        from edge.knapp import container_of, knapp, write_report

        res = knapp(
            [(container_of(c.id), not c.passed) for c in phys],
            {c.id: c.label for c in containers},  # already read: no second parse
        )
        write_report(res, args.out)
        summary["knapp"] = {k: v for k, v in res.to_dict().items() if k != "containers"}
    try:
        atomic_write_json(args.out / "summary.json", summary)
        draw_timeline(outcomes, gate_on, delay_s, args.out / "timeline.png", alarm_on=alarm_on)
    except OSError as e:
        raise FodError(f"{args.out}: cannot write the summary: {e}") from None
    if args.json:
        print(json.dumps(summary))
    else:
        lat = summary["latency_ms"]
        frame, model_in = ("x".join(map(str, summary[k])) for k in ("frame_size", "model_input"))
        how = "letterboxed" if summary["tiles"] == "1x1" else f"in {summary['tiles']} tiles"
        letterboxed = f"frames {frame} {how} to {model_in}; " if frame != model_in else ""
        r = summary["reference_rounds"]
        rounds = "" if r is None else f"reference rounds {r or 'none due'}; "
        print(
            f"{summary['containers']} containers: {summary['physically_passed']} passed the gate, "
            f"faults {summary['faults'] or 'none'}; detection rate {summary['detection_rate']}, "
            f"false-reject rate {summary['false_reject_rate']} (model alone: detection "
            f"{summary['model_detection_rate']}, false rejects "
            f"{summary['model_false_reject_rate']}; fault rejects {summary['fault_rejects']}); "
            f"passed_defective "
            f"{summary['passed_defective']}, passed_faulty {summary['passed_faulty']}, "
            f"audit_disagrees {summary['audit_disagrees']}, alarms {summary['alarms']}; "
            + (
                f"audit_uncertain {summary['audit_uncertain']}; "
                if summary["audit_uncertain"]
                else ""
            )
            + f"decision p50/p99 {lat['decision_p50']}/{lat['decision_p99']} ms; "
            + letterboxed
            + rounds
            + f"sequences {seq_dir}; audit {args.out / 'audit'}, "
            f"timeline {args.out / 'timeline.png'}"
            + (f"; the runtime failed: {failed}" if failed else "")
        )
    if summary["violations"]:  # a safety invariant broke: red, whatever the faults asked for
        say(
            f"fod simulate: SAFETY VIOLATED: {', '.join(summary['violations'])} "
            f"(summary {args.out / 'summary.json'})"
        )
        return 1
    if failed and not any(faults.values()):  # none injected: a stage down is a bug
        say(
            f"fod simulate: the runtime failed with no fault injected: {failed}; every "
            f"container from then on was rejected (summary {args.out / 'summary.json'})"
        )
        return 3  # as `fod run` exits after a failed stage
    return 0


def _summary(args, cfg, phys, outcomes, counts, injector, ghosts, alarm_on) -> dict:
    import numpy as np

    from edge.simulate import judge

    def pct(values, q):
        return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None

    firsts = [o for o in outcomes if not o.amends]
    decide = [o.decided_t - o.trigger_t for o in firsts if o.decided_t]
    capture = [o.captured_t - o.trigger_t for o in firsts if o.captured_t]
    faults: dict = {}
    for o in outcomes:
        if o.fault:
            faults[o.fault] = faults.get(o.fault, 0) + 1
    s = judge(phys)
    s.update(
        rate_per_min=args.rate,
        frames=args.frames,
        wiring=cfg.gpio.energise_to,
        alarm_output=cfg.gpio.alarm_energise_to,  # how the output shows it (alarms above)
        faults=faults,
        injected={k: v for k, v in injector.injected.items() if v},
        alarms=len(alarm_on),
        ghost_containers=ghosts,
        amended=sum(o.amends for o in outcomes),
        stale_frames_dropped=counts.get("stale_frames", 0),
        deadline_misses=faults.get("late", 0) + faults.get("stall", 0),
        latency_ms={
            "capture_p50": pct(capture, 50),
            "capture_p99": pct(capture, 99),
            "decision_p50": pct(decide, 50),
            "decision_p99": pct(decide, 99),
        },
    )
    return s
