"""Unit lifecycle verbs: `fod rollout` (a new bundle, with rollback), `fod safe-outputs`
(the service's ExecStopPost: outputs to their safe state) and `fod service` (`fod run` kept
as the systemd unit keeps it, where there is no systemd: the container's PID 1)."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from edge.logsink import say
from fod.args import add_max_age, add_switch, non_negative_number, positive_number

if TYPE_CHECKING:
    from edge.outputs_record import DrivenOutputs

STATE = Path("/var/lib/pharma-fod")
CONFIG = Path("/etc/pharma-fod/line.toml")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rollout",
        help="install a bundle on this unit: verify, engine, check, switch, restart, probe; "
        "roll back on failure",
    )
    p.add_argument("--bundle", type=Path, required=True, help="bundle folder or .tar.gz")
    p.add_argument("--root", type=Path, default=STATE, help=f"state folder (default {STATE})")
    p.add_argument("--config", type=Path, default=CONFIG, help=f"line config (default {CONFIG})")
    p.add_argument("--public-key", type=Path, help="the fleet's key (default: model.public_key)")
    p.add_argument(
        "--settle",
        type=non_negative_number,  # NaN or inf: a probe that never ends, the rollout hung
        default=20.0,
        help="seconds healthy after restart (0: one probe)",
    )
    p.add_argument(
        "--constraints",
        type=Path,
        help="the fleet's validated versions (pip freeze): refuse on a unit off them",
    )
    p.add_argument(
        "--restart-cmd",
        default="systemctl restart pharma-fod",
        help="how to restart the service",
    )
    p.add_argument(
        "--probe-cmd",
        default="systemctl is-active --quiet pharma-fod",
        help="a health probe: exit 0 when the service is up and ready",
    )
    add_switch(
        p,
        "alarm-probe",
        True,
        "each probe also reads the line config's metrics endpoint: a raised alarm fails "
        "it (default on; skipped where metrics.port = 0)",
    )
    add_max_age(p, "with the alarm probe, a probe fails")
    add_switch(p, "engine", None, "build the TensorRT engine (default: for model.backend tensorrt)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollout)

    p = sub.add_parser(
        "safe-outputs", help="drive the gate and alarm outputs off (the service's ExecStopPost)"
    )
    p.add_argument("--config", type=Path, default=CONFIG, help=f"line config (default {CONFIG})")
    p.add_argument(
        "--outputs-record",
        type=Path,
        help="the outputs `fod run --outputs-record` drove: driven off too, and alone where "
        "the line config no longer loads",
    )
    p.set_defaults(func=cmd_safe_outputs)

    p = sub.add_parser(
        "service",
        help="`fod run` as the systemd unit runs it, for a container: outputs off before and "
        "after it however it ended, a watchdog on its sd_notify beats, a stop timeout",
    )
    p.add_argument("--config", type=Path, default=CONFIG, help=f"line config (default {CONFIG})")
    p.add_argument(
        "--outputs-record",
        type=Path,
        default=STATE / "driven-outputs.json",
        help="as `fod run --outputs-record` (default %(default)s)",
    )
    p.add_argument("--watchdog", type=positive_number, default=5.0, help="WatchdogSec (default 5)")
    p.add_argument(
        "--start-timeout",
        type=positive_number,
        default=180.0,
        help="seconds to READY=1: model and engine loaded (default 180)",
    )
    p.add_argument(
        "--stop-timeout",
        type=positive_number,
        default=20.0,
        help="seconds from the stop signal to SIGKILL (default 20)",
    )
    p.add_argument("--allow-rollback", action="store_true", help="passed to `fod run`")
    p.add_argument("--allow-mock-pins", action="store_true", help="passed to `fod run`")
    p.add_argument(
        "--rate", type=positive_number, help="passed to `fod run`: timer triggers per minute"
    )
    p.set_defaults(func=cmd_service)


def cmd_rollout(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.rollout import Rollout, RolloutConfig

    key = args.public_key
    if key is None:
        pk = load_config(args.config).model.public_key
        key = Path(pk) if pk else None
    cfg = RolloutConfig(
        root=args.root,
        config=args.config,
        public_key=key,
        restart=shlex.split(args.restart_cmd),
        probe=shlex.split(args.probe_cmd),
        settle_s=args.settle,
        build_engine=args.engine,
        alarm_probe=args.alarm_probe,
        heartbeat_max_age_s=args.max_age,
        constraints=args.constraints,
    )
    res = Rollout(cfg).run(args.bundle)
    if args.json:
        print(json.dumps({"status": res.status, "current": res.current, "steps": res.steps}))
    else:
        for s in res.steps:
            print(f"{'ok  ' if s['ok'] else 'FAIL'} {s['step']:<15} {s['detail']}")
        print(f"{res.status}: current = {res.current}")
    return res.exit_code


def _outputs_off(record: DrivenOutputs, path: Path) -> Optional[str]:
    """Drive the outputs on record off -> why that failed, or None."""
    from edge.errors import FodError
    from edge.gpio import LineIO

    try:
        with LineIO(record.gpio()):  # opening claims the outputs low; closing drives them off
            pass
    except FodError as e:  # the config's outputs are still driven off after this
        return f"{path}: driving {record.pins} off failed: {e}"
    print(f"outputs off as the runtime drove them ({path}): {record.pins}")
    return None


def cmd_safe_outputs(args: argparse.Namespace) -> int:
    """Gate and alarm outputs off: those the runtime drove (`--outputs-record`), which the
    line config may no longer name or load, and the config's. Exit 1: the gate feedback
    says the gate is still energised; 2: an output could not be driven, or the config or
    the record is bad (every output that could be reached is off by then)."""
    import logging

    from edge.config import ConfigError, load_config
    from edge.errors import FodError
    from edge.gpio import LineIO
    from edge.outputs_record import read_record

    log = logging.getLogger("fod")
    record, errors = None, []
    if args.outputs_record is not None:
        try:
            record = read_record(args.outputs_record)
        except FodError as e:  # the config's outputs still go off below
            errors.append(str(e))
    try:
        cfg = load_config(args.config)
    except ConfigError:  # what the runtime drove still goes off; then the config's error
        failed = _outputs_off(record, args.outputs_record) if record is not None else None
        if failed is not None:
            log.error("%s", failed)
        raise
    if record is not None and not record.same_outputs(cfg.gpio):
        # The config no longer names what the runtime drove (edited while it ran): both off.
        log.warning(
            "%s names other outputs than the runtime drove (%s, from %s): both driven off",
            args.config,
            record.pins,
            record.config,
        )
        errors += filter(None, [_outputs_off(record, args.outputs_record)])
    with LineIO(cfg.gpio) as io:  # opening claims the outputs low; closing drives them off
        stuck = io.gate_stuck()
    if cfg.gpio.energise_to == "reject":
        log.warning(
            "gpio.energise_to = 'reject': with the runtime stopped no reject pulse fires and "
            "containers PASS; the machine must stop on the runtime's alarm/watchdog"
        )
    mode = cfg.gpio.alarm_energise_to
    ready = f" (the {mode} output: off shows the alarm)" if io.alarm_when_off else ""
    print(f"outputs off: {cfg.gpio.ejector_pin}, {cfg.gpio.alarm_pin or '(no alarm pin)'}{ready}")
    if stuck:
        say(
            f"fod safe-outputs: the gate feedback {cfg.gpio.gate_feedback_pin} is still on with "
            "the gate output off: the gate is stuck energised (a welded relay, a short)"
        )
        return 1
    if errors:
        raise FodError("; ".join(errors))
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    from edge.service import ServiceConfig, serve

    flags = {"--allow-rollback": args.allow_rollback, "--allow-mock-pins": args.allow_mock_pins}
    cfg = ServiceConfig(
        config=args.config,
        outputs_record=args.outputs_record,
        watchdog_s=args.watchdog,
        start_timeout_s=args.start_timeout,
        stop_timeout_s=args.stop_timeout,
        run_args=tuple(flag for flag, on in flags.items() if on)
        + (("--rate", str(args.rate)) if args.rate else ()),
    )
    return serve(cfg)
