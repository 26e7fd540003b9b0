"""mmdetection's GFL 1x schedule: linear warm-up, then x0.1 at 8/12 and 11/12 of the run."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    total_iters: int
    warmup_iters: int = 500
    warmup_ratio: float = 0.001  # lr starts at this fraction of the base lr
    steps: tuple = (8 / 12, 11 / 12)  # fractions of the run where lr drops
    gamma: float = 0.1

    def factor(self, it: int) -> float:
        """Multiplier of the base lr at iteration `it` (0-based)."""
        f = self.gamma ** sum(it >= round(s * self.total_iters) for s in self.steps)
        if it < self.warmup_iters:
            k = it / self.warmup_iters
            f *= self.warmup_ratio + (1 - self.warmup_ratio) * k
        return f
