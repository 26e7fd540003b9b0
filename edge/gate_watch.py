"""What the pulse thread knows of the gate between pulses: whether its last off write
failed, whether the gate feedback reads it energised with the output off (stuck), and
since when the gate may have been energised outside the pulses planned (unsure).

While unsure, the span is handed on piece by piece (`piece`), each from where the last
ended, so the containers reaching the gate meanwhile go on record while it lasts; the last
piece ends when an off write went through and the feedback (if any) reads off. No I/O
but the feedback read: the pulse thread writes the output and reports the pieces.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Tuple

log = logging.getLogger(__name__)


class GateWatch:
    def __init__(
        self,
        read: Optional[Callable[[], bool]],  # the gate feedback's level, or None (none wired)
        report_stuck: Callable[[str], None],  # the alarm
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.report_stuck, self.clock = read, report_stuck, clock
        self.stuck = False  # the feedback says the gate is energised while the output is off
        self.off_failed = False  # the last off write failed every try: the output may be on
        # Since when the gate may be energised between pulses (reported up to then), and why.
        self.unsure: Optional[Tuple[float, str]] = None
        self._quiet_t = clock()  # when the gate was last seen (or made) off

    def open(self, since: float, cause: str) -> None:
        """The gate may be energised between pulses from `since` (kept if already so)."""
        if self.unsure is None:
            self.unsure = (since, cause)

    def off_written(self, t_call: float, ok: bool, energised: bool) -> None:
        """An off write called at `t_call` went through (`ok`) or failed every try; failed
        after an energising write that went through (`energised`), the gate is unsure."""
        self.off_failed = not ok
        if ok:
            self._quiet_t = self.clock()
        elif energised:
            self.open(t_call, "the gate output's off write failed")

    def check_off(self, when: str, since: Optional[float] = None) -> None:
        """With the output off, the feedback must be off: else the gate is stuck energised
        (reported once per episode; the alarm stays latched) and unsure from `since` (by
        default when it was last seen or made off)."""
        if self.read is None:
            return
        on = self.read()
        if on and not self.stuck:
            self.open(
                self._quiet_t if since is None else since,
                "the gate feedback is on with the output off",
            )
            self.report_stuck(
                f"gate stuck energised {when}: the gate feedback is on, the output off"
            )
        elif not on and not self.off_failed:
            self._quiet_t = self.clock()
        self.stuck = on

    def piece(self, now: float) -> Optional[Tuple[float, str]]:
        """The next piece of the unsure span, (its start, the cause) up to `now`, or None
        when the gate is not unsure; the span ends here once the gate is off again."""
        if self.unsure is None:
            return None
        (t0, cause), still = self.unsure, self.off_failed or self.stuck
        self.unsure = (now, cause) if still else None
        if not still:
            log.warning("gate off again after %.0f ms unsure (%s)", (now - t0) * 1000, cause)
        return t0, cause
