"""A log output that blocks (journald stalled, a pipe nobody reads) stops no thread that
logs: the line still runs, judged at its pins, and the lines that did not fit are counted."""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from edge import logsink
from edge.logsink import LogSink
from edge.metrics import RuntimeMetrics

from .test_failsafe import N, _argv
from .test_recorder import _wait_for


@pytest.fixture
def full_pipe() -> Iterator[Tuple[int, int]]:
    """A pipe whose buffer is already full: the next write to it blocks -> (read, write)."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    for chunk in (b"x" * 4096, b"x"):  # to the last byte: no small write still fits
        try:
            while True:
                os.write(w, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(w, True)
    yield r, w
    os.close(r)
    os.close(w)


def _read_until(fd: int, *wanted: bytes) -> str:
    """What the pipe gives, past its filling, once every one of `wanted` came (at most
    60 s without a byte)."""
    got = b""
    while not all(x in got for x in wanted):
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"still waiting for {wanted} after {got[-200:]!r}"
        got += os.read(fd, 65536)
    return got.decode().lstrip("x")


def test_lines_beyond_the_queue_are_dropped_counted_and_said_once_the_output_takes_them(
    monkeypatch: pytest.MonkeyPatch, full_pipe: Tuple[int, int]
) -> None:
    r, w = full_pipe
    sink = LogSink(w, depth=20)
    monkeypatch.setattr(logsink, "_installed", sink)  # as `fod` installs it
    metrics = RuntimeMetrics()
    sink.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test_logsink.unit")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(sink)
    try:
        log.info("line 0")  # taken by the writer, which blocks in its write
        assert _wait_for(lambda: sink._lines.qsize() == 0, 10)
        t = threading.Thread(target=lambda: [log.info("line %d", i) for i in range(1, 100)])
        t.start()
        t.join(30)
        assert not t.is_alive()  # the output took nothing, and the logging thread went on
        assert not sink.drain(0.2)
        dropped = sink.dropped  # 20 queued (lines 1-20), the rest dropped
        assert dropped == 79
        # Taken as the output takes lines again, while logging.shutdown holds the handler's
        # lock around `flush` at exit: the writer must not need that lock to finish.
        got = []
        reader = threading.Thread(target=lambda: got.append(_read_until(r, b"line 20\n", b"dro")))
        sink.acquire()
        try:
            reader.start()
            assert sink.drain(10)
        finally:
            sink.release()
        reader.join(60)
        text = got[0]
        assert f"{dropped} log lines dropped: the log output took nothing" in text
        lines = [x for x in text.splitlines() if x.startswith("line ")]
        assert lines == [f"line {i}" for i in range(21)]
        assert sink.drain(10) and sink.dropped == 0
        # said, and still counted for the unit's monitoring
        assert metrics.registry.get_sample_value("fod_log_lines_dropped") == dropped
    finally:
        log.removeHandler(sink)


def test_the_line_runs_at_its_pins_with_a_log_output_that_blocks(
    bundle: Path, small_set: Path, tmp_path: Path, full_pipe: Tuple[int, int]
) -> None:
    """`fod simulate` as a process whose stderr takes nothing from its first line on: the
    startup's warnings, the audit stage counting faults, the alarm raised. Every container
    is a fault (non-finite outputs): each must be rejected by its pulse at the gate (the
    reject wiring), the alarm output raised, the audit agreeing with the pins."""
    argv = _argv(bundle, small_set, tmp_path / "sim", "nan=1.0", "reject")
    cmd = [sys.executable, "-m", "fod", *argv]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=full_pipe[1], timeout=120)
    assert p.returncode == 0
    s = json.loads(p.stdout)
    assert s["containers"] == N and s["physically_passed"] == 0 and s["faults"] == {"bad_output": N}
    assert s["alarms"] >= 1 and s["audit_disagrees"] == 0 and not s["violations"]


def test_a_forked_child_writes_its_lines_itself() -> None:
    """A DataLoader worker is a fork: no writer thread there, and the queue's lock may have
    been taken at the fork. Its lines are written as it logs them."""
    r, w = os.pipe()
    sink = LogSink(w)
    sink.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("test_logsink.fork")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(sink)
    try:
        pid = os.fork()
        if pid == 0:  # the child: log, then leave without the parent's exit handlers
            log.info("from the child")
            os._exit(0 if sink.drain(0) else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert _read_until(r, b"from the child\n")
    finally:
        log.removeHandler(sink)
        os.close(r)
        os.close(w)


LAST_WORDS = """
import sys, threading
from edge import logsink
logsink.install(20)
t = threading.Thread(target=lambda: 1 / 0, name="doomed")
t.start()
t.join()
class Finalised:
    def __del__(self):
        raise ValueError("in a finaliser")
Finalised()
print("went on", flush=True)
"""


def test_python_s_own_last_words_go_through_the_sink(full_pipe: Tuple[int, int]) -> None:
    """An exception nothing caught in a thread, or raised in a finaliser: Python itself
    writes those to stderr, from the thread they happen on. With stderr full, that thread
    would stop there (a thread joined at exit, the process with it)."""
    r, w = full_pipe
    p = subprocess.Popen([sys.executable, "-c", LAST_WORDS], stdout=subprocess.PIPE, stderr=w)
    try:
        assert p.stdout is not None and select.select([p.stdout], [], [], 60)[0], "hung"
        assert p.stdout.readline() == b"went on\n"
        text = _read_until(r, b"ValueError: in a finaliser")  # the exit's drain writes them
        assert p.wait(60) == 0
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    assert "exception in thread doomed" in text and "ZeroDivisionError" in text


def test_an_error_exits_with_its_code_when_the_output_takes_nothing(
    tmp_path: Path, full_pipe: Tuple[int, int]
) -> None:
    """`fod`'s own error line goes through the sink too: with stderr full, a refused start
    (here a bundle that is not there) still exits 2, its line dropped after the exit's
    drain, where a plain print would wait on the output for good."""
    argv = ["simulate", "--bundle", str(tmp_path / "absent"), "--out", str(tmp_path / "o")]
    p = subprocess.run([sys.executable, "-m", "fod", *argv], stderr=full_pipe[1], timeout=60)
    assert p.returncode == 2
