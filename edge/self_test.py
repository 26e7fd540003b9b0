"""The reference frames again while the line runs (`SelfTest`): the inference stage puts
them through the model one at a time, when no container waits for it."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable, List, Optional

import numpy as np

from .postprocess import Detections
from .reference import Sight, see_image

log = logging.getLogger(__name__)

# A round passes within its period plus this much (its frames wait for idle moments), or
# the line runs unchecked: no round passed for 2 periods + REFERENCE_GRACE_S raises the alarm.
REFERENCE_GRACE_S = 30.0


class SelfTest:
    """The reference frames again while the line runs: a round every `every_s` seconds,
    one image at a time, each in a moment the inference stage has nothing else to do.

    An engine can go blind after its start-up check (its weights or context corrupted in
    memory, a GPU fault, a driver reset) and still give outputs that pass every per-frame
    check: the line would accept every container until the next start. A round that finds
    short of what its rule needs (`Rule.judge`) is blind. Not thread-safe: one
    stage (inference) steps it."""

    def __init__(
        self,
        sight: Sight,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sight, self.every_s, self.clock = sight, every_s, clock
        self.need = sight.rule.need
        self.next_t = clock() + every_s  # the start-up check was the first round
        self.passed_t = clock()  # when the last round passed (the start-up check's, first)
        self.rounds: collections.Counter[str] = collections.Counter()  # passed/blind/error
        self.line = sight.line  # what the last finished round found
        self._image = 0
        self._seen: np.ndarray = np.zeros(len(sight.ref.boxes), np.int8)  # [M] `seen_in`
        self._unchecked: List[str] = []  # accepts since the last passed round: first, last
        self._unchecked_n = 0
        self._overdue_alarmed = False

    def accepted(self, container_id: str) -> None:
        """A container accepted on the model's word: unchecked until a round passes."""
        self._unchecked[1:] = [container_id]
        self._unchecked_n += 1

    def unchecked(self) -> str:
        """The containers accepted since the last passed round, for the alarm."""
        n, which = self._unchecked_n, " .. ".join(self._unchecked)
        held = f" ({which}): hold them for re-inspection" if n else ""
        return f"{n} container(s) accepted since the last passed check{held}"

    def due(self) -> bool:
        return self.clock() >= self.next_t

    def overdue(self) -> Optional[float]:
        """Seconds since a round last passed, where that is past 2 periods plus
        REFERENCE_GRACE_S (the stage never idle, or its rounds failing to run), else None.
        Read from another thread than the one stepping: a float read."""
        age = self.clock() - self.passed_t
        return age if age > 2 * self.every_s + REFERENCE_GRACE_S else None

    def overdue_alarm(self) -> Optional[str]:
        """Why to raise the alarm, the first time `overdue` (None before and after): the
        line goes on, its containers' own calls still run; an operator must look. Called
        by the supervisor alone."""
        age = None if self._overdue_alarmed else self.overdue()
        if age is None:
            return None
        self._overdue_alarmed = True
        return (
            f"no round of the reference frames has passed for {age:.0f} s "
            f"({self.rounds.get('error', 0)} ended by a model call that raised): the "
            "model's sight is unchecked"
        )

    def idle_step(self, detect: Callable[[np.ndarray], Detections], rounds: Any) -> Optional[str]:
        """The inference stage with no container waiting: where a round is due, `detect` on
        its next image (`step`) -> what the round found where it ended blind, else None.
        `rounds`: the metric counting rounds by result. A model call that raises is logged
        and counted; a backend that fails, fails the containers' own calls too."""
        if not self.due():
            return None
        try:
            ok = self.step(detect)
        except Exception as e:
            log.warning("reference self-test: the model call raised %r; next round later", e)
            rounds.labels("error").inc()
            return None
        if ok is None:
            return None
        rounds.labels("passed" if ok else "blind").inc()
        return None if ok else self.line

    def step(self, detect: Callable[[np.ndarray], Detections]) -> Optional[bool]:
        """`detect` (one image of the model input's size -> its detections) on the round's
        next image -> None while the round goes on; at its end True (enough found) or
        False (blind; `line` says what it found). A call that raises ends the round
        unjudged (counted `error`, the next round `every_s` later) and propagates."""
        ref, i = self.sight.ref, self._image
        try:
            d = detect(ref.images[i])
        except BaseException:
            self._end("error")
            raise
        see_image(self._seen, d, ref, i)
        self._image += 1
        if self._image < len(ref.images):
            return None
        ok, self.line = self.sight.rule.judge(self._seen, ref)
        self._end("passed" if ok else "blind")
        return ok

    def _end(self, result: str) -> None:
        if result == "passed":
            self.passed_t = self.clock()
            self._unchecked, self._unchecked_n = [], 0
        self.rounds[result] += 1
        self._image = 0
        self._seen[:] = 0
        self.next_t = self.clock() + self.every_s
