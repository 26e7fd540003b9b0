"""One loop skeleton for the runtime's threads: heartbeats, crash handling, systemd's watchdog.

A stage is a function that handles one item (or one idle tick) per call. The skeleton
beats the stage's heartbeat around every call, so a stage blocked in a driver call (a
hung camera read, a stalled backend) stops beating; the systemd watchdog then hears
nothing and the service manager restarts the unit. An exception that escapes a step
is a crash: the runtime's `on_crash` rejects what the stage held and raises the alarm,
and the stage restarts until `max_restarts`, after which the runtime is failed (a
non-zero exit, so the service manager restarts it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from typing import Callable, Dict, List, NoReturn, Optional

log = logging.getLogger(__name__)
_left_behind: List[Stage] = []  # stages a join gave up on, process-wide (see exit_process)


class StopStage(Exception):
    """Raised by a step to end its stage cleanly (the stop sentinel reached it)."""


class Stage:
    """A supervised thread: `step()` again and again until stopped, beating a heartbeat."""

    def __init__(
        self,
        name: str,
        step: Callable[[], None],
        on_crash: Callable[[Stage, BaseException], bool],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self._step, self._on_crash, self.clock = name, step, on_crash, clock
        self.last_beat = clock()
        self.busy_since: Optional[float] = None  # set while a step is running
        self.crashes = 0
        self.stopped = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.busy_since = self.last_beat = self.clock()
            try:
                self._step()
            except StopStage:
                break
            except BaseException as e:
                self.crashes += 1
                log.exception("stage %s crashed (%d)", self.name, self.crashes)
                if not self._on_crash(self, e):
                    break  # the runtime decided this stage stays down (failed)
            finally:
                self.busy_since = None
                self.last_beat = self.clock()
        self.stopped.set()

    def stale(self, now: float, interval_s: float) -> bool:
        """True when a step has been running longer than `interval_s` (no beat since), or the
        thread has ended (crashed and stays down). Not before it was started."""
        busy, t = self.busy_since, self._thread
        return (busy is not None and now - busy > interval_s) or (
            t.ident is not None and not t.is_alive()
        )

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` s; False if the thread is still stuck (it is a daemon)."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            if self not in _left_behind:
                _left_behind.append(self)
            return False
        return True


def stuck_stages() -> List[str]:
    """Names of the stages left behind that are still stuck in their call."""
    return [s.name for s in _left_behind if s._thread.is_alive()]


def exit_process(code: int) -> NoReturn:
    """End the process with `code`. A stage still stuck in a native call (an inference that
    never returned) would have its library torn down under it by the interpreter's exit:
    ONNX Runtime then aborts (SIGABRT, exit 134, a core file) and the exit code the service
    manager reads is lost. Then skip the teardown: everything is audited and closed by now,
    only the logs and streams are flushed."""
    stuck = stuck_stages()
    if not stuck:
        sys.exit(code)
    log.error("stages %s still stuck in a call: exiting %d without teardown", stuck, code)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe must not change the exit code
            stream.flush()
    os._exit(code)


def sd_notify(message: str, environ: Optional[Dict[str, str]] = None) -> bool:
    """Send one sd_notify datagram to $NOTIFY_SOCKET; a no-op (False) where it is unset."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):  # abstract namespace socket
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(addr)
            s.sendall(message.encode())
    except OSError as e:
        log.warning("sd_notify %r failed: %s", message, e)
        return False
    return True


class Watchdog:
    """Pets systemd's watchdog only while every stage beat within `interval_s`."""

    def __init__(
        self,
        stages: List[Stage],
        interval_s: float,
        notify: Callable[[str], bool] = sd_notify,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stages, self.interval_s, self.notify, self.clock = stages, interval_s, notify, clock
        self.ready_sent = False

    def stuck(self) -> List[str]:
        """Names of the stages that missed their beat (empty when all are alive)."""
        now = self.clock()
        return [s.name for s in self.stages if s.stale(now, self.interval_s)]

    def tick(self) -> bool:
        """READY=1 once, then WATCHDOG=1 while healthy; returns whether it petted."""
        if self.stuck():
            return False
        if not self.ready_sent:
            self.notify("READY=1")
            self.ready_sent = True
        self.notify("WATCHDOG=1")
        return True


def watchdog_interval_s(environ: Optional[Dict[str, str]] = None, default: float = 5.0) -> float:
    """Half of systemd's WatchdogSec (from $WATCHDOG_USEC), as sd_watchdog_enabled advises."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    try:
        return int(usec) / 2e6 if usec else default
    except ValueError:
        return default
