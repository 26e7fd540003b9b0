"""torch views of the numpy data pipeline: seeded per (epoch, index), so runs are repeatable."""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from calibration.noise import NoiseConfig
from edge.preprocess import Letterbox, letterbox

from ..data.augment import AugmentConfig, augment, paired_view
from ..data.dataset import CocoDetection, TrainingData


def chw(a: np.ndarray) -> torch.Tensor:
    """[H, W, 3] -> [3, H, W], same dtype, contiguous."""
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


class TrainSet(Dataset):
    """Augmented training views; the draw depends on (seed, epoch, index) only."""

    def __init__(self, coco: TrainingData, aug: AugmentConfig, seed: int = 0) -> None:
        self.coco, self.aug, self.seed, self.epoch = coco, aug, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        s = augment(self.coco.sample(i, rng), self.aug, rng)
        targets = {"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)}
        return chw(s.image), targets  # [3, H, W] uint8


class DistillSet(Dataset):
    """(teacher image, student image, targets): one geometry, noise on the student's only;
    drawn from (seed, epoch, index) alone."""

    def __init__(
        self, coco: TrainingData, aug: AugmentConfig, noise: NoiseConfig, seed: int = 0
    ) -> None:
        self.coco, self.aug, self.noise, self.seed, self.epoch = coco, aug, noise, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        p = paired_view(self.coco.sample(i, rng), self.aug, self.noise, rng)
        targets = {"boxes": torch.from_numpy(p.boxes), "labels": torch.from_numpy(p.labels)}
        return chw(p.teacher), chw(p.student), targets


class EvalSet(Dataset):
    """Whole images letterboxed to the model size, as the device sees them."""

    def __init__(self, coco: CocoDetection, size: Tuple[int, int]) -> None:
        self.coco, self.size = coco, size

    def __len__(self) -> int:
        return len(self.coco)

    def __getitem__(self, i: int) -> Tuple[torch.Tensor, int, Letterbox]:
        s = self.coco[i]
        img, lb = letterbox(s.image, self.size)
        return chw(img), s.image_id, lb


def collate_train(batch: List) -> Tuple[torch.Tensor, List[Dict[str, torch.Tensor]]]:
    images, targets = zip(*batch)
    return torch.stack(images), list(targets)  # [N, 3, H, W] uint8


def collate_distill(
    batch: List,
) -> Tuple[torch.Tensor, torch.Tensor, List[Dict[str, torch.Tensor]]]:
    teacher, student, targets = zip(*batch)
    return torch.stack(teacher), torch.stack(student), list(targets)  # [N, 3, H, W] uint8 each


def collate_eval(batch: List) -> Tuple[torch.Tensor, List[int], List[Letterbox]]:
    images, ids, lbs = zip(*batch)
    return torch.stack(images), list(ids), list(lbs)
