"""`fod`: one console script, one verb per workflow step (the README lists them).

Each verb group lives in its own module and imports its stage package lazily, so a
Jetson without torch runs every edge verb. User errors (`FodError`) become one line
on stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from fod import __version__
from fod import data as data_verbs
from fod import deploy as deploy_verbs
from fod import fleet as fleet_verbs
from fod import line as line_verbs
from fod import model as model_verbs
from fod import simulate as simulate_verbs
from fod import study as study_verbs
from fod import unit as unit_verbs

log = logging.getLogger("fod")

# A missing top-level module -> the extra that brings it (an edge-only unit has no torch).
_EXTRAS = {
    "torch": "train",
    "torchvision": "train",
    "onnx": "train",
    "onnxsim": "train",
    "pycocotools": "train",
    "matplotlib": "train",
    "tensorboard": "train",
    "gpiozero": "edge",
    "onnxruntime": "edge",
    "prometheus_client": "edge",
    "cryptography": "edge",
    "pycuda": "jetson",
}

# Verb groups: each registers its sub-commands and sets `func` on them.
_GROUPS = (
    data_verbs,
    model_verbs,
    study_verbs,
    deploy_verbs,
    unit_verbs,
    fleet_verbs,
    line_verbs,
    simulate_verbs,
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fod",
        description="pharma-fod: foreign-particle detection for liquid injectables.",
    )
    p.add_argument("--version", action="version", version=f"pharma-fod {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="verb", metavar="VERB")
    sub.required = True
    for group in _GROUPS:
        group.register(sub)
    return p


def _own_message(e: Exception) -> str:
    """The error's own message. One raised in a DataLoader worker process (an image that
    does not decode, met mid-training) comes back re-raised with the worker's whole
    traceback as its message; its last line is the error as raised."""
    text = str(e)
    if "Original Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    head, sep, own = last.partition(": ")
    return own if sep and head.rsplit(".", 1)[-1] == type(e).__name__ else last


def main(argv: Optional[List[str]] = None) -> int:
    from edge import logsink
    from edge.errors import FodError

    args = build_parser().parse_args(argv)
    # Log lines are written by a thread of their own: a log output that blocks (journald
    # stalled, a pipe nobody reads) stops no thread that logs.
    logsink.install(logging.DEBUG if args.verbose else logging.INFO)
    say = logsink.say  # stderr, after the log lines before it, never stopping the exit
    try:
        return int(args.func(args) or 0)
    except FodError as e:
        say(f"fod {args.verb}: error: {_own_message(e)}")
        return 2
    except ModuleNotFoundError as e:  # a verb of a stage this install does not have
        if e.name is not None and e.name.split(".")[0] == "tensorrt":
            say(
                f"fod {args.verb}: error: needs TensorRT's Python bindings, which come with "
                "JetPack on a Jetson (apt install python3-libnvinfer; a venv made with "
                "--system-site-packages sees them)"
            )
            return 2
        if e.name is None or e.name.split(".")[0] not in _EXTRAS:
            raise
        extra = _EXTRAS[e.name.split(".")[0]]
        say(
            f"fod {args.verb}: error: needs {e.name}, which this install does not have: "
            f"pip install 'pharma-fod[{extra}]'"
        )
        return 2
    except KeyboardInterrupt:
        say(f"fod {args.verb}: interrupted")
        return 130


def entry() -> None:
    """The `fod` command and `python -m fod`: main(), then an exit that keeps its code even
    with a runtime stage still stuck in a native call."""
    from edge.supervise import exit_process

    try:
        code = main()
        sys.stdout.flush()  # a reader that left shows here, not in the interpreter's exit
    except BrokenPipeError:  # `fod ... | head`: the reader left, the work is done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    exit_process(code)
