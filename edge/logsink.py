"""The process's log output, written by a thread of its own.

Every thread logs, the runtime's stages and the pulse thread included (a fault, an
alarm), and a log write can block: journald stalled, a container runtime's log driver in
blocking mode, a terminal paused, a pipe nobody reads. Written where it is emitted, that
write would stop whichever thread logged - the supervisor as it raises the alarm, the
audit stage as it counts a fault - and, at start, the whole process before the line runs.
So a log line is formatted by the thread that emits it and queued, never waited for; one
writer thread takes the queue to the file descriptor. When the output takes nothing the
queue fills, and the lines that do not fit are dropped and counted; the count is logged
once the output takes lines again. At exit the queue is drained for a bounded time.

`warnings` are routed through logging too (`logging.captureWarnings`), so a numpy warning
in a stage thread does not write to stderr itself, and so are Python's own last words on an
exception nothing caught in a thread (`threading.excepthook`) or raised where it cannot
propagate, in a finaliser (`sys.unraisablehook`). What native libraries write to the
descriptor themselves (ONNX Runtime's own log) is beyond this module.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Optional

FORMAT = "%(levelname)s %(name)s: %(message)s"
DEPTH = 10000  # lines queued at most (about 1-2 MB): room for a burst, bounded memory
EXIT_DRAIN_S = 2.0  # at exit, what is queued gets this long to be written


class LogSink(logging.Handler):
    """A logging handler that never blocks the thread that logs (the module's docstring)."""

    def __init__(self, fd: int = 2, depth: int = DEPTH) -> None:
        super().__init__()
        self.fd = fd
        self.dropped = 0  # lines lost (no room in the queue) and not yet said
        self.dropped_total = 0  # lines lost since start (`fod_log_lines_dropped`)
        # The counts' own lock, not the handler's: logging.shutdown holds that one around
        # `flush`, which waits for the writer thread.
        self._counts = threading.Lock()
        self._lines: queue.Queue[str] = queue.Queue(depth)
        self._direct = False  # a forked child (a DataLoader worker) writes as it logs
        self._writer = threading.Thread(target=self._write_loop, name="log-output", daemon=True)
        self._writer.start()
        # A forked child has no writer thread, and the queue's lock may have been held at
        # the fork: there the handler writes directly, as a plain stream handler would.
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._direct = True
        self._counts = threading.Lock()  # another thread may have held it at the fork

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
        except Exception:  # a bad format or argument: said, not raised into the caller
            line = f"{record.levelname} {record.name}: (unformattable: {record.msg!r})\n"
        self.put_line(line)

    def put_line(self, line: str) -> None:
        """`line` (with its newline) to the output after those queued before it."""
        if self._direct:
            self._write(line)
            return
        try:
            self._lines.put_nowait(line)
        except queue.Full:
            self._count_dropped(1)

    def handleError(self, record: logging.LogRecord) -> None:
        """The base class prints to sys.stderr here, the very write this handler avoids."""
        self._count_dropped(1)

    def drain(self, timeout: float) -> bool:
        """Wait until every queued line is written; False after `timeout` seconds (the
        output takes nothing)."""
        if self._direct:
            return True
        end = time.monotonic() + timeout
        done = self._lines.all_tasks_done
        with done:
            while self._lines.unfinished_tasks:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                done.wait(left)
        return True

    def flush(self) -> None:  # logging.shutdown at exit, and `exit_process`
        self.drain(EXIT_DRAIN_S)

    def _write_loop(self) -> None:
        while True:
            line = self._lines.get()
            try:
                lost = self.dropped
                if lost:  # counted until said
                    self._write(
                        f"WARNING {__name__}: {lost} log lines dropped: the log output "
                        "took nothing while they came\n"
                    )
                    self._said(lost)
                self._write(line)
            finally:
                self._lines.task_done()

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        try:
            while data:  # may block: only this thread waits
                data = data[os.write(self.fd, data) :]
        except OSError:  # closed, or the reader went: the line is lost, nothing else
            self._count_dropped(1)

    def _count_dropped(self, n: int) -> None:
        with self._counts:
            self.dropped += n
            self.dropped_total += n

    def _said(self, n: int) -> None:
        with self._counts:
            self.dropped -= n


_installed: Optional[LogSink] = None


def say(text: str) -> None:
    """A line for the person at the terminal on stderr (an error, a verdict): where the sink is
    installed, after the log lines before it and through it, so an output that takes
    nothing delays the exit by at most EXIT_DRAIN_S and never stops it."""
    sink = _installed
    if sink is None:
        print(text, file=sys.stderr)
        return
    sink.put_line(text + "\n")
    sink.drain(EXIT_DRAIN_S)


def dropped_total() -> int:
    """Log lines the installed sink lost since start (0 without one)."""
    return _installed.dropped_total if _installed is not None else 0


def install(level: int, fd: int = 2) -> Optional[LogSink]:
    """The root logger writes through a LogSink on `fd` at `level`, as `logging.basicConfig`
    would (and, like it, nothing is changed where the root logger has a handler already: a
    test harness, a program that embeds this one) -> the sink, or None."""
    root = logging.getLogger()
    if root.handlers:
        return None
    global _installed
    sink = _installed = LogSink(fd)
    sink.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(sink)
    root.setLevel(level)
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    sys.unraisablehook = _unraisable
    return sink


def _thread_exception(args: Any) -> None:  # threading.ExceptHookArgs
    if args.exc_type is SystemExit:  # as the default hook: a thread's way to end
        return
    name = args.thread.name if args.thread is not None else "?"
    exc = (args.exc_type, args.exc_value, args.exc_traceback)
    logging.getLogger("py.threads").error("exception in thread %s", name, exc_info=exc)


def _unraisable(u: Any) -> None:  # sys.UnraisableHookArgs
    exc = (u.exc_type, u.exc_value, u.exc_traceback)
    what = u.err_msg or "Exception ignored in"
    logging.getLogger("py.unraisable").error("%s: %r", what, u.object, exc_info=exc)
