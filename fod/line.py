"""Line verbs: `fod run`, `fod knapp`, `fod audit verify|export|show`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional

from fod.args import positive_int, positive_number

DEMO_BUNDLE = Path(__file__).resolve().parent.parent / "models" / "demo"


def register(sub: argparse._SubParsersAction) -> None:
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
        "--rate",
        type=positive_number,  # NaN, 0 or a negative rate: a period that never waits, a storm
        help="timer triggers per minute when there is no trigger pin",
    )
    p.add_argument(
        "--max-containers", type=positive_int, help="stop after this many (commissioning, tests)"
    )
    p.add_argument(
        "--allow-mock-pins", action="store_true", help="accept gpio.pin_factory = 'mock'"
    )
    p.add_argument(
        "--allow-rollback", action="store_true", help="run a bundle older than the last one run"
    )
    p.add_argument(
        "--outputs-record",
        type=Path,
        help="write the outputs it drives here first (JSON), for `fod safe-outputs "
        "--outputs-record` to drive off whatever the line config says by then",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "audit",
        help="the audit trail: verify FOLDER | export FOLDER --format jsonl|csv | show FOLDER SEQ "
        "| replay FOLDER --config TOML | runs FOLDER | archive FOLDER --to DEST",
        description="verify: check the hash chain, evidence images, anchor and checkpoints; "
        "export: every row with its chain fields; show: draw a row's detections over its "
        "evidence frame, and the paths of the tracks the decision links them into; replay: "
        "decide every recorded container again under the [decision] "
        "of another line config, from its recorded detections; runs: the rows of each run, "
        "with the software, bundle and config its start event names; archive: move the "
        "oldest files to DEST (both halves verified), freeing the unit's disk.",
    )
    p.add_argument("action", choices=["verify", "export", "show", "replay", "runs", "archive"])
    p.add_argument("folder", type=Path, help="audit folder (audit-*.db)")
    p.add_argument("seq", type=int, nargs="?", help="show: the row's sequence number")
    p.add_argument("--public-key", type=Path, help="verify, archive: check checkpoint signatures")
    p.add_argument("--to", type=Path, help="archive: the folder the oldest files move to")
    p.add_argument(
        "--signing-key",
        type=Path,
        help="archive: the unit's audit.signing_key, which signs where the trail now starts "
        "(required for a signed trail)",
    )
    p.add_argument(
        "--keep",
        type=positive_int,
        default=2,
        help="archive: the newest files that stay (default 2; the runtime writes the newest)",
    )
    p.add_argument("--format", choices=["jsonl", "csv"], default="jsonl", help="export format")
    p.add_argument(
        "--out", type=Path, help="export: file (default stdout); show: PNG; replay: JSON report"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="replay: the line config to decide with; show: to link tracks with "
        "(default: the built-in [decision])",
    )
    p.add_argument(
        "--truth", type=Path, help="replay: sequences.json of simulated containers (rates)"
    )
    p.add_argument("--json", action="store_true", help="replay, runs: print JSON")
    p.add_argument(
        "--classes",
        default="fiber,particle,glass_flake",
        help="show, replay: the model's class names, comma-separated",
    )
    p.add_argument(
        "--min-score", type=float, default=0.5, help="show: draw detections from this score"
    )
    p.set_defaults(func=cmd_audit)


def cmd_run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from edge.app import run_forever
    from edge.config import load_config
    from edge.errors import FodError
    from edge.preflight import FAIL, check_decision
    from edge.reach import BlindDecision

    cfg = load_config(args.config)
    decision = check_decision(cfg)
    if decision.status == FAIL:  # a line that could only pass containers
        raise FodError(f"{args.config}: {decision.detail}")
    if cfg.camera.source == "sim":
        raise FodError(
            "camera.source is 'sim': use `fod simulate`, or set a camera in the line config"
        )
    if not cfg.gpio.pin_factory:
        raise FodError(f"{args.config}: gpio.pin_factory is not set: name the unit's pin factory")
    factory = None
    if cfg.gpio.pin_factory == "mock":
        if not args.allow_mock_pins:
            raise FodError(
                f"{args.config}: gpio.pin_factory = 'mock' drives no hardware; "
                "pass --allow-mock-pins to run without it (tests, commissioning)"
            )
        from gpiozero.pins.mock import MockFactory

        factory = MockFactory()
    if args.outputs_record is not None:  # before any output is driven
        from edge.outputs_record import write_record

        write_record(args.outputs_record, cfg.gpio, args.config)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # systemd stops with SIGTERM: finish, release, exit
        signal.signal(sig, lambda *_: stop.set())
    try:
        rt = run_forever(
            cfg, stop, args.rate, args.max_containers, factory, allow_rollback=args.allow_rollback
        )
    except BlindDecision as e:  # known once the model's frames are
        raise FodError(f"{args.config}: {e}") from None
    c = rt.counts  # by what the gate did (amending rows move a container)
    counts = {
        "containers": c.get("accept", 0) + c.get("reject", 0) + c.get("passed_unaccepted", 0),
        "rejected": c.get("reject", 0),
        "passed_unaccepted": c.get("passed_unaccepted", 0),  # a reject pulse that failed
        "faults": sum(v for k, v in c.items() if k.startswith("fault:")),
        "unseen": c.get("unseen", 0),  # triggered after it stopped taking them: no row
        "alarm": rt.alarm,
        "failed": rt.failed,
    }
    unaccepted = counts["passed_unaccepted"]
    human = (
        f"{counts['containers']} containers, {counts['rejected']} rejected, "
        + (f"{unaccepted} PASSED without an accept, " if unaccepted else "")
        + f"{counts['faults']} faults"
        + (f", {counts['unseen']} triggered after it stopped (no row)" if counts["unseen"] else "")
        + (f"; ALARM: {rt.alarm_reasons[-1]}" if rt.alarm else "")
    )
    print(json.dumps(counts) if args.json else human)
    # After an alarm or a failed stage the service manager must see a failure (and restart).
    return 3 if rt.failed or rt.alarm else 0


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
    from edge.audit_verify import draw_record, export_rows, verify
    from edge.config import load_config
    from edge.decision import DecisionConfig
    from edge.errors import FodError
    from edge.fsutil import atomic_output, write_png
    from edge.replay import line_decision

    if args.action == "verify":
        r = verify(args.folder, args.public_key)
        signed = f", {r.checkpoints} checkpoints" + (" (signatures valid)" if r.signed else "")
        moved = ""
        if r.retired:  # the rows before first_seq: in an archive (fod audit archive)
            to = f", last to {r.retired.to}" if r.retired.to else ""
            moved = f" (seq 1..{r.retired.seq} archived{to})"
        print(
            f"{args.folder}: {r.rows} containers in {r.files} file(s), "
            f"seq {r.first_seq}..{r.last_seq}{moved}, {r.images} evidence images{signed}, "
            f"{_count(sum(r.events.values()), 'event')}{_kinds(r.events)}: chain intact"
        )
        for path in r.cut:  # the unit died mid-append; its next start removes the cut line
            print(f"note: {path} ends in a line cut short (the unit died writing it): not checked")
    elif args.action == "export":
        if args.out is None:
            export_rows(args.folder, args.format, sys.stdout)
        else:  # complete or absent: a temp file beside it, renamed once every row is in
            with atomic_output(args.out) as tmp, open(tmp, "w", encoding="utf-8") as f:
                export_rows(args.folder, args.format, f)
                f.flush()
                os.fsync(f.fileno())
    elif args.action == "replay":
        return _replay(args)
    elif args.action == "archive":
        from edge.audit_archive import archive

        if args.to is None:
            raise FodError("fod audit archive needs --to DEST: the folder the files move to")
        a = archive(args.folder, args.to, args.keep, args.public_key, args.signing_key)
        if not a.files:
            print(f"{args.folder}: nothing to archive (--keep {args.keep} files stay)")
        else:
            print(
                f"{args.folder}: moved {_count(len(a.files), 'file')} (seq {a.first_seq}.."
                f"{a.last_seq}, {_count(a.images, 'evidence image')}) to {args.to}; both verified"
            )
    elif args.action == "runs":
        from edge.audit_runs import as_json, runs, table

        rs = runs(args.folder)
        print(as_json(rs) if args.json else "\n".join(table(rs)))
    else:
        if args.seq is None or args.out is None:
            raise FodError("fod audit show needs SEQ and --out PNG")
        if args.out.suffix.lower() != ".png":  # PNG bytes under another name mislead a viewer
            raise FodError(f"{args.out}: fod audit show writes a PNG; name it *.png")
        names = args.classes.split(",")
        decision = line_decision(load_config(args.config)) if args.config else DecisionConfig()
        write_png(args.out, draw_record(args.folder, args.seq, names, args.min_score, decision))
        linked = args.config or "the built-in [decision]"
        print(f"{args.out}: seq {args.seq}, its recorded detections and tracks ({linked})")
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _kinds(events: Dict[str, int]) -> str:
    """{'start': 2, 'alarm': 1} -> ' (1 alarm, 2 start)'; '' for none."""
    return f" ({', '.join(f'{n} {k}' for k, n in sorted(events.items()))})" if events else ""


def _replay(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.errors import FodError
    from edge.fsutil import atomic_write_bytes
    from edge.knapp import container_of, truth_from_sequences
    from edge.replay import line_decision, recorded_rows, replay, summarize

    if args.config is None:
        raise FodError("fod audit replay needs --config: the line config to decide with")
    cfg = load_config(args.config)
    names = args.classes.split(",")
    rows = replay(
        recorded_rows(args.folder), names, line_decision(cfg), cfg.postprocess.score_threshold
    )
    if not rows:
        raise FodError(f"{args.folder}: no audited containers")
    truth = truth_from_sequences(args.truth) if args.truth else None
    summary = summarize(rows, truth)
    changed = [r for r in rows if r.before != r.after]
    if args.out is not None:
        report = {
            "config": str(args.config),
            "summary": summary,
            "changed": [vars(r) for r in changed],
        }
        atomic_write_bytes(args.out, (json.dumps(report, indent=1) + "\n").encode("utf-8"))
    if args.json:
        print(json.dumps(summary))
        return 0

    def pct(x: Optional[float]) -> str:
        return "-" if x is None else f"{100 * x:.1f} %"

    print(
        f"{args.folder}: {summary['replayed']} of {summary['containers']} containers decided "
        f"again ({summary['faulted']} with a fault kept as recorded): "
        f"{summary['accept_to_reject']} accept -> reject, "
        f"{summary['reject_to_accept']} reject -> accept"
    )
    if args.truth:
        print(
            f"defective rejected {summary['defective_rejected_before']} -> "
            f"{summary['defective_rejected_after']} of {summary['defective']} "
            f"({pct(summary['detection_rate_before'])} -> "
            f"{pct(summary['detection_rate_after'])}), good rejected "
            f"{summary['good_rejected_before']} -> {summary['good_rejected_after']} of "
            f"{summary['good']} ({pct(summary['false_reject_rate_before'])} -> "
            f"{pct(summary['false_reject_rate_after'])})"
        )
    kind = {"reject": " (defective)", "accept": " (good)"}
    for r in changed[:20]:
        label = kind[truth[container_of(r.container_id)]] if truth else ""
        print(f"  {r.container_id}{label}: {r.before} -> {r.after}: {r.reason}")
    if len(changed) > 20:
        print(f"  ... {len(changed) - 20} more" + (f" in {args.out}" if args.out else ""))
    return 0
