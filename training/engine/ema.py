"""A moving average of the detector's weights (`--ema DECAY`): evaluated, kept as best.pt
and exported in place of the weights of the last step.

SGD's last iterate carries the noise of its last batches; an exponential moving average of
the weights (and of the BatchNorm statistics) smooths it, which is what a short schedule
on few images needs most. torch's AveragedModel keeps the copy and walks both modules;
the decay is ramped in as TensorFlow's ExponentialMovingAverage does with `num_updates`,
min(decay, (1 + n) / (10 + n)), so the average of a run shorter than the decay's time
constant (1 / (1 - decay) steps) is not mostly the weights it started from.
"""

from __future__ import annotations

from typing import Any, Dict, List

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_decay(decay: float, updates: int) -> float:
    """The decay applied at the update that follows `updates` earlier ones."""
    return min(decay, (1.0 + updates) / (10.0 + updates))


class DetectorEMA:
    """The averaged copy of `detector`, updated after each optimiser step."""

    def __init__(self, detector: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: expected a value in (0, 1)")
        self.decay = decay
        self.averaged = AveragedModel(detector, multi_avg_fn=self._update, use_buffers=True)
        self.averaged.eval()  # never trained: its BatchNorm statistics are averaged too

    @property
    def module(self) -> nn.Module:
        return self.averaged.module

    @property
    def updates(self) -> int:
        return int(self.averaged.n_averaged.item())

    @torch.no_grad()
    def _update(self, averaged: List[Tensor], current: List[Tensor], n: Tensor) -> None:
        # n counts the updates before this one (the first copies the weights: n = 0 there)
        d = ema_decay(self.decay, int(n.item()) - 1)
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - d)
        else:  # a counter (BatchNorm's num_batches_tracked) is not averaged
            for a, c in zip(averaged, current):
                a.copy_(c)

    def update(self, detector: nn.Module) -> None:
        self.averaged.update_parameters(detector)

    def state(self, detector: nn.Module) -> Dict[str, Any]:
        """For a checkpoint beside the averaged weights: how many updates they hold, and
        the trained `detector`'s own weights (what --resume continues)."""
        weights = {k: v.detach().cpu() for k, v in detector.state_dict().items()}
        return {"ema_decay": self.decay, "ema_updates": self.updates, "train_state_dict": weights}

    def load(self, state_dict: Dict[str, Tensor], updates: int) -> None:
        self.module.load_state_dict(state_dict)
        self.averaged.n_averaged.fill_(updates)
