"""`fod service`: one run of `fod run` kept as the systemd unit keeps it, where no systemd
does (the container image's PID 1).

systemd gives `jetson/pharma-fod.service` three things a container runtime does not:
- ExecStopPost: `fod safe-outputs` after the run ended however it ended. A process killed
  mid-pulse (OOM killer, a crash in native code) leaves its GPIO lines as it drove them: a
  gate energised passes every container (accept wiring), a `ready` alarm output left on
  tells the PLC all is well while nothing inspects;
- the watchdog: a process hung as a whole (a native call holding the interpreter) beats no
  more, and its pulse thread cannot end a pulse; it is killed, then its outputs go off;
- the stop timeout: a run that does not end after the stop signal is killed.
This does the same around one child `fod run`, and drives the outputs off before it starts
too (a run killed with the container, past the stop timeout, left them as they were); the
container runtime's restart policy starts the next run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

log = logging.getLogger(__name__)

SAFE_OUTPUTS_TIMEOUT_S = 60.0  # a pin driver that hangs must not keep the service up forever
KILL_WAIT_S = 10.0  # for a SIGKILLed run to end (it cannot while blocked in a driver call)


@dataclass(frozen=True)
class ServiceConfig:
    config: Path
    outputs_record: Path
    watchdog_s: float = 5.0  # WatchdogSec: no WATCHDOG=1 for this long kills the run
    start_timeout_s: float = 180.0  # TimeoutStartSec: no READY=1 by then kills it (engine load)
    stop_timeout_s: float = 20.0  # TimeoutStopSec: after the stop signal, then SIGKILL
    run_args: Tuple[str, ...] = ()  # more `fod run` options (--allow-rollback, ...)
    fod: Tuple[str, ...] = (sys.executable, "-m", "fod")


def exit_code(returncode: int) -> int:
    """A child's Popen returncode -> the exit status a shell reports (killed by N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode


@contextlib.contextmanager
def notify_socket() -> Iterator[Tuple[socket.socket, str]]:
    """A datagram socket for the run's sd_notify messages and its $NOTIFY_SOCKET: in the
    abstract namespace (Linux), so no folder must be writable (a read-only container) and
    nothing is left behind."""
    name = f"fod-service-{os.getpid()}-{secrets.token_hex(8)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        yield s, "@" + name


class Service:
    """Runs `fod run` once between two `fod safe-outputs`; `stop()` (the stop signal's
    handler) ends it as systemd stops a unit."""

    def __init__(self, cfg: ServiceConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self._stop = threading.Event()

    def stop(self, *_: object) -> None:
        self._stop.set()

    def run(self) -> int:
        """The run's exit status (a signal's as 128 + N), else that of the last safe-outputs."""
        self.safe_outputs("before the run")
        if self._stop.is_set():  # stopped while starting: nothing to run
            return 0
        rc = 1  # whatever ends this, the outputs go off after it
        try:
            with notify_socket() as (sock, address):
                env = {
                    **os.environ,
                    "NOTIFY_SOCKET": address,
                    "WATCHDOG_USEC": str(int(self.cfg.watchdog_s * 1e6)),
                }
                cmd = [*self.cfg.fod, "run", "--config", str(self.cfg.config)]
                cmd += ["--outputs-record", str(self.cfg.outputs_record), *self.cfg.run_args]
                child = subprocess.Popen(cmd, env=env)
                log.info("fod run started (pid %d)", child.pid)
                try:
                    rc = self.watch(child, sock)
                finally:  # an exception here must not leave the run going unwatched
                    if child.poll() is None:
                        _kill(child)
        finally:
            off = self.safe_outputs("after the run")
        return rc or off

    def watch(self, child: subprocess.Popen, sock: socket.socket) -> int:
        """Until the child ends: READY=1 within the start timeout, then WATCHDOG=1 within the
        watchdog's; after the stop signal, the stop timeout alone. Kills it when one runs out."""
        cfg = self.cfg
        deadline, why = self.clock() + cfg.start_timeout_s, "no READY=1 within the start timeout"
        stopping = False
        sock.settimeout(0.05)
        while child.poll() is None:
            now = self.clock()
            for msg in _receive(sock):
                if stopping:
                    continue
                if "READY=1" in msg or "WATCHDOG=1" in msg:
                    deadline, why = now + cfg.watchdog_s, f"no WATCHDOG=1 for {cfg.watchdog_s} s"
            if self._stop.is_set() and not stopping:
                stopping = True
                child.send_signal(signal.SIGTERM)
                deadline, why = now + cfg.stop_timeout_s, "still running past the stop timeout"
            if now > deadline:
                log.error("fod run (pid %d): %s: killing it", child.pid, why)
                if not _kill(child):
                    return exit_code(-signal.SIGKILL)
        rc = exit_code(child.returncode)
        log.log(logging.INFO if rc == 0 else logging.ERROR, "fod run ended: exit %d", rc)
        return rc

    def safe_outputs(self, when: str) -> int:
        """`fod safe-outputs` in a process of its own (as ExecStopPost) -> its exit status."""
        cmd = [*self.cfg.fod, "safe-outputs", "--config", str(self.cfg.config)]
        cmd += ["--outputs-record", str(self.cfg.outputs_record)]
        try:
            rc = subprocess.run(cmd, timeout=SAFE_OUTPUTS_TIMEOUT_S).returncode
        except subprocess.TimeoutExpired:
            log.error("fod safe-outputs %s hung for %.0f s", when, SAFE_OUTPUTS_TIMEOUT_S)
            return 124
        except OSError as e:
            log.error("fod safe-outputs %s could not start: %s", when, e)
            return 127
        if rc != 0:
            log.error("fod safe-outputs %s: exit %d", when, rc)
        return exit_code(rc)


def _kill(child: subprocess.Popen) -> bool:
    """SIGKILL the run and wait for its end -> whether it ended. A process blocked in a
    driver call (uninterruptible) dies only when the call returns: its outputs go off
    after it anyway, as far as they can be claimed."""
    child.kill()
    try:
        child.wait(KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        log.error("fod run (pid %d) still there %.0f s after SIGKILL", child.pid, KILL_WAIT_S)
        return False
    return True


def _receive(sock: socket.socket) -> List[str]:
    """The datagrams waiting (waiting up to the socket's timeout for the first)."""
    out: List[str] = []
    with contextlib.suppress(socket.timeout, BlockingIOError):
        out.append(sock.recv(4096).decode("utf-8", "replace"))
        while True:
            out.append(sock.recv(4096, socket.MSG_DONTWAIT).decode("utf-8", "replace"))
    return out


def serve(cfg: ServiceConfig) -> int:
    """Run the service with SIGTERM and SIGINT as its stop (the process's main thread)."""
    svc = Service(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, svc.stop)
    return svc.run()
