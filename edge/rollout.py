"""`fod rollout`: put a new bundle on this unit without ever leaving the line on a broken one.

Layout under the unit's state folder (default /var/lib/pharma-fod):
    bundles/<name>-<version>-<sha12>/   verified copies, one per bundle ever installed
    current -> bundles/...              what the service runs (line.toml: model.bundle)
    previous -> bundles/...             what ran before the last switch
    rollouts.jsonl                      every step of every rollout, appended and fsynced

Steps: stage (verify with the fleet's public key, copy, verify the copy), engine (TensorRT
units: `fod engine`), check (the bundle and model checks of `fod check` on the staged
copy: the running service keeps the camera and pins), switch `current`, restart, probe
(the service must stay up, with its alarm down where it serves metrics, for `settle_s`).
A failure before the switch leaves `current` and the running service untouched. A failure
after it switches back, writes a rollback permit for exactly the previous bundle (the
runtime refuses an older bundle otherwise, see edge/app.py), restarts and probes again.
Every step is logged.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from .bundle import open_bundle
from .config import LineConfig, load_config
from .errors import FodError
from .fsutil import atomic_write_json
from .lines import append_whole
from .metrics import HEARTBEAT_MAX_AGE_S, alarm_state

log = logging.getLogger(__name__)


class RolloutError(FodError):
    """A rollout step failed; the message names the step."""


@dataclass(frozen=True)
class RolloutConfig:
    root: Path  # the unit's state folder
    config: Path  # line.toml; its model.bundle should be root/current
    public_key: Optional[Path]  # the fleet's key: the bundle must be signed by it
    restart: Sequence[str] = ("systemctl", "restart", "pharma-fod")
    probe: Sequence[str] = ("systemctl", "is-active", "--quiet", "pharma-fod")
    settle_s: float = 20.0  # the service must pass every probe for this long
    probe_every_s: float = 2.0
    build_engine: Optional[bool] = None  # None: when the config's backend is tensorrt
    # Each probe also reads the service's metrics (line config [metrics], unless port 0):
    # a raised alarm fails it, so a bundle that starts but rejects every container (too
    # slow for the gate, bad outputs) is rolled back like one that crashes.
    alarm_probe: bool = True
    # ... and the supervisor's heartbeat (fod_heartbeat_timestamp_seconds): the endpoint
    # answers from its own thread, so a bundle whose supervisor hangs (nothing rejects an
    # overdue container or alarms on a stuck stage) fails the probe when its last round is
    # older than this (seconds; 0: not checked), as `fod health --max-age` does.
    heartbeat_max_age_s: float = HEARTBEAT_MAX_AGE_S
    # The fleet's validated versions (a pip freeze): a unit whose packages moved off them
    # takes no new bundle (`fod check --constraints`'s software line, at the check step).
    constraints: Optional[Path] = None


@dataclass
class RolloutResult:
    status: str  # done | unchanged | refused | rolled_back | failed
    bundle: str
    current: Optional[str]
    steps: List[Dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"done": 0, "unchanged": 0, "refused": 1, "rolled_back": 1}.get(self.status, 3)


class Rollout:
    """One rollout on one unit. The steps are methods so a test (or another service
    manager) can replace the ones that touch the machine."""

    def __init__(self, cfg: RolloutConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self.line: LineConfig = load_config(cfg.config)
        self.bundles = cfg.root / "bundles"
        self.current = cfg.root / "current"
        self.previous = cfg.root / "previous"
        self.journal = cfg.root / "rollouts.jsonl"

    # -- the steps --------------------------------------------------------------------------
    def stage(self, bundle: Path) -> Path:
        """Verify `bundle` (signature included) and install a verified copy; its folder."""
        with open_bundle(bundle, self.cfg.public_key) as b:
            m = b.manifest
            digest = _sha12((b.root / "manifest.json").read_bytes())
            name = f"{m.get('name', 'bundle')}-{m.get('version', '0')}-{digest}"
            release = self.bundles / _safe(name)
            if not release.exists():
                tmp = self.bundles / f".{release.name}.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
                for p in b.root.iterdir():
                    shutil.copyfile(p, tmp / p.name)
                os.replace(tmp, release)
        with open_bundle(release, self.cfg.public_key):  # the copy, as the service will read it
            pass
        return release

    def engine(self, release: Path) -> None:
        from .backends.trt_build import ensure_engine
        from .engine_cache import default_cache_dir

        m = self.line.model
        cache = Path(m.engine_cache) if m.engine_cache else default_cache_dir()
        with open_bundle(release, self.cfg.public_key) as b:
            from .backends.select import trt_precision

            ensure_engine(b, trt_precision(m.precision, b), 1024, m.dla_core, 1, cache)

    def check(self, release: Path) -> None:
        from .preflight import FAIL, check_bundle, check_model, check_software

        cfg = replace(self.line, model=replace(self.line.model, bundle=str(release)))
        pinned = [check_software(self.cfg.constraints)] if self.cfg.constraints else []
        for c in (*pinned, check_bundle(cfg), check_model(cfg)):
            if c.status == FAIL:
                raise RolloutError(f"check {c.name}: {c.detail}")

    def restart(self) -> None:
        _run(self.cfg.restart, "restart")

    def probe(self) -> None:
        """Healthy on every probe for settle_s: up (a service that crashes after start fails)
        and, where it serves metrics, its alarm down (the alarm latches until a restart, so
        one raised since this restart is the new bundle's or the line's: either way not a
        bundle to leave running unattended)."""
        end = self.clock() + self.cfg.settle_s
        while True:
            _run(self.cfg.probe, "probe")
            self._alarm_down()
            if self.clock() >= end:
                return
            time.sleep(self.cfg.probe_every_s)

    # -- the procedure ----------------------------------------------------------------------
    def run(self, bundle: Path) -> RolloutResult:
        self.cfg.root.mkdir(parents=True, exist_ok=True)
        before = _target(self.current)
        res = RolloutResult("refused", str(bundle), before)

        def step(name: str, fn: Callable[[], Any]) -> Any:
            t0 = self.clock()
            try:
                out = fn()
            except Exception as e:  # any failure fails the step: refused before the switch,
                # rolled back after it - never a unit left on a bundle whose probe crashed
                why = _why(e)
                self._log(res, name, False, why, t0)
                raise RolloutError(f"{name}: {why}") from None
            self._log(res, name, True, "", t0)
            return out

        try:
            release = step("stage", lambda: self.stage(bundle))
            if before is not None and Path(before).resolve() == release.resolve():
                res.status = "unchanged"
                self._log(res, "switch", True, f"{release.name} already current", self.clock())
                return res
            if self._wants_engine():
                step("engine", lambda: self.engine(release))
            step("check", lambda: self.check(release))
            step("switch", lambda: self._switch(release))
        except RolloutError:
            return res  # current and the running service untouched
        try:
            step("restart", self.restart)
            step("probe", self.probe)
        except RolloutError:
            return self._roll_back(res, release, before)
        res.status, res.current = "done", str(release)
        return res

    def _roll_back(self, res: RolloutResult, failed: Path, before: Optional[str]) -> RolloutResult:
        if before is None:
            res.status, res.current = "failed", str(failed)
            self._log(res, "rollback", False, "no previous bundle to go back to", self.clock())
            return res
        try:
            self._permit(Path(before), failed)
            self._switch(Path(before))
            self._log(res, "rollback", True, f"current -> {Path(before).name}", self.clock())
            self.restart()
            self.probe()
            self._log(res, "rollback probe", True, "", self.clock())
            res.status, res.current = "rolled_back", before
        except Exception as e:  # whatever it was, the unit is not known good: failed
            self._log(res, "rollback", False, _why(e), self.clock())
            res.status, res.current = "failed", _target(self.current)
        return res

    # -- helpers ----------------------------------------------------------------------------
    def _alarm_down(self) -> None:
        m = self.line.metrics
        if not self.cfg.alarm_probe or not m.port:
            return
        # up, per the probe command, but is it well?
        why = alarm_state(m.port, m.address, max_age_s=self.cfg.heartbeat_max_age_s)
        if why:
            raise RolloutError(f"probe: {why}")

    def _wants_engine(self) -> bool:
        if self.cfg.build_engine is not None:
            return self.cfg.build_engine
        return self.line.model.backend == "tensorrt"

    def _switch(self, release: Path) -> None:
        """current -> release, atomically (rename of a new link); previous -> the old one."""
        old = _target(self.current)
        tmp = self.cfg.root / ".current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(release.resolve())
        os.replace(tmp, self.current)
        if old is not None and Path(old).resolve() != release.resolve():
            ptmp = self.cfg.root / ".previous.tmp"
            ptmp.unlink(missing_ok=True)
            ptmp.symlink_to(old)
            os.replace(ptmp, self.previous)

    def _permit(self, back_to: Path, failed: Path) -> None:
        from .app import ROLLBACK_PERMIT

        with open_bundle(back_to) as b:
            name, version = b.manifest.get("name"), b.manifest.get("version")
        folder = Path(self.line.audit.folder)
        if not folder.is_absolute():
            folder = self.cfg.config.parent / folder
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            folder / ROLLBACK_PERMIT,
            {
                "name": name,
                "version": version,
                "by": f"fod rollout on {socket.gethostname()}",
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "reason": f"{failed.name} failed after the switch",
            },
        )

    def _log(self, res: RolloutResult, step: str, ok: bool, detail: str, t0: float) -> None:
        entry = {
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "unit": socket.gethostname(),
            "bundle": res.bundle,
            "step": step,
            "ok": ok,
            "detail": detail,
            "seconds": round(max(0.0, self.clock() - t0), 3),
        }
        res.steps.append(entry)
        (log.info if ok else log.error)("rollout %s: %s %s", step, "ok" if ok else "FAILED", detail)
        append_whole(self.journal, (json.dumps(entry) + "\n").encode())


def _run(cmd: Sequence[str], what: str) -> None:
    try:
        r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        raise RolloutError(f"{what}: {' '.join(cmd)}: {e}") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        raise RolloutError(f"{what}: {' '.join(cmd)} exited {r.returncode} {tail[0]}".rstrip())


def _why(e: Exception) -> str:
    """An expected failure in its own words (ImportError: no TensorRT on this unit);
    anything else - a bug - with its type."""
    return str(e) if isinstance(e, (FodError, OSError, ImportError)) else f"{type(e).__name__}: {e}"


def _target(link: Path) -> Optional[str]:
    return str(link.resolve()) if link.is_symlink() else None


def _sha12(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:12]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
