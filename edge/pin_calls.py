"""The gate's pin calls (writes of the output, reads of the feedback): each marked in
progress while the driver has it, and a write that raises written again.

A driver call can block (a hung GPIO chardev) for longer than a pulse; the pulse thread
then reports nothing until it returns. The mark lets another thread (the supervisor,
`PulseScheduler.reap`) see that call as hung and report what it holds up meanwhile.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Optional, Tuple

log = logging.getLogger(__name__)

# Writes of the gate output tried per pulse: a GPIO line write can fail once and succeed
# at once (a busy chardev, a bus hiccup), and with the reject wiring a pulse that is not
# written lets its container pass. Tried again only inside the pulse's window.
GATE_WRITE_TRIES = 3


class PinCalls:
    """One thread's calls on the gate pins (the pulse thread's)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # The call in progress: (when it was called, whether the output may be on
        # meanwhile, what it is). Written by the calling thread, read by any.
        self.calling: Optional[Tuple[float, bool, str]] = None

    def call(self, fn: Callable[[], Any], may_be_on: bool = True, what: str = "gate write") -> Any:
        """`fn()` marked in progress while the driver has it; `may_be_on`: the output may be
        energised until it returns (a write may energise it) -> what it returns."""
        self.calling = (self.clock(), may_be_on, what)
        try:
            return fn()
        finally:
            self.calling = None

    def write(self, fn: Callable[[], None], tag: str, until: float) -> int:
        """`fn` (the gate output on or off for container `tag`), written again after a write
        that raises, up to GATE_WRITE_TRIES writes while the clock is at most `until` -> the
        writes it took; the last error propagates."""
        tries = 1
        while True:
            try:
                self.call(fn)
                return tries
            except Exception as e:
                if tries == GATE_WRITE_TRIES or self.clock() > until:
                    raise
                log.warning("gate write for %s failed (%r); writing it again", tag, e)
            tries += 1

    def hung(self, longer_than: float) -> Optional[Tuple[float, bool, str]]:
        """The call in progress (as `calling`) where it has been for longer than
        `longer_than` seconds, else None."""
        calling = self.calling
        if calling is None or self.clock() - calling[0] <= longer_than:
            return None
        return calling
