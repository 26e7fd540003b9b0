"""Argument types shared by verbs: they raise argparse errors (exit 2, one line)."""

from __future__ import annotations

import argparse
import math
from typing import List, Optional, Tuple


def size_wh(text: str) -> Tuple[int, int]:
    """'1280x800' -> (1280, 800)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WxH, e.g. 1280x800, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


# = edge.metrics.HEARTBEAT_MAX_AGE_S (a test holds them equal): importing it here would
# add prometheus_client to every `fod` start.
HEARTBEAT_MAX_AGE_S = 30.0


def add_max_age(p: argparse.ArgumentParser, what: str) -> None:
    """--max-age: how old the runtime supervisor's last round may be (its heartbeat)."""
    p.add_argument(
        "--max-age",
        type=non_negative_number,  # a negative or NaN age limit would fail every probe
        default=HEARTBEAT_MAX_AGE_S,
        help=f"{what} when the supervisor's last round is older (seconds; 0: not checked)",
    )


def add_switch(p: argparse.ArgumentParser, name: str, default: Optional[bool], help: str) -> None:
    """--NAME / --no-NAME into `NAME` (dashes as underscores), `default` when neither is
    given. By hand: argparse.BooleanOptionalAction is Python 3.9+, and on a unit with
    JetPack 5 (Python 3.8) `fod` builds every verb's parser at start."""
    dest = name.replace("-", "_")
    both = p.add_mutually_exclusive_group()
    both.add_argument(f"--{name}", dest=dest, action="store_true", default=default, help=help)
    both.add_argument(f"--no-{name}", dest=dest, action="store_false", default=default)


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {v}")
    return v


def non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def non_negative_number(text: str) -> float:
    """A finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def positive_number(text: str) -> float:
    """A finite number > 0 (a NaN or infinite timeout would never run out)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def class_list(text: str) -> List[str]:
    """'fiber,particle,glass_flake' -> the names, each once and none empty."""
    names = [n.strip() for n in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class names, each once, got {text!r}"
        )
    return names
