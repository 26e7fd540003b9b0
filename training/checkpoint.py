"""Checkpoints (docs/design.md): state dict, config, class names; atomic, weights_only."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from edge.errors import FodError
from edge.fsutil import atomic_output

from .models.config import DetectorConfig
from .models.gfl import GFL

FORMAT = "pharma-fod/gfl-checkpoint/1"


def save_checkpoint(
    path: Path,
    model: nn.Module,
    cfg: DetectorConfig,
    arch: str,
    class_names: List[str],
    **extra: Any,
) -> None:
    """Write to a temp file beside `path`, then rename: a crash never leaves half a checkpoint."""
    state = {
        "format": FORMAT,
        "arch": arch,
        "model_config": cfg.to_dict(),
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def read_checkpoint(path: Path) -> Dict[str, Any]:
    """Load with weights_only=True (no pickled code runs) and check it is ours."""
    if not path.is_file():
        raise FodError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text here is a page about weights_only
        raise FodError(
            f"{path}: not a checkpoint of tensors (a foreign file, or pickled code, refused)"
        ) from None
    except Exception as e:  # torch raises several types for a corrupt or truncated file
        first = (str(e).splitlines() or [""])[0][:200]
        raise FodError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise FodError(f"{path}: not a pharma-fod GFL checkpoint (format {FORMAT!r} expected)")
    return ckpt


def load_detector(path: Path, arch: Optional[str] = None, num_classes: Optional[int] = None):
    """(model in eval mode, config, class names, checkpoint dict) from a checkpoint.

    `arch` and `num_classes`, when given, must match the checkpoint.
    """
    ckpt = read_checkpoint(path)
    cfg = DetectorConfig.from_dict(ckpt["model_config"])
    if arch is not None and ckpt["arch"] != arch:
        raise FodError(f"{path}: checkpoint is {ckpt['arch']}, expected {arch}")
    if num_classes is not None and cfg.head.num_classes != num_classes:
        raise FodError(
            f"{path}: checkpoint has {cfg.head.num_classes} classes, the data has {num_classes}"
        )
    model = GFL(cfg)
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        raise FodError(
            f"{path}: weights do not fit its own config: {str(e).splitlines()[0]}"
        ) from None
    return model.eval(), cfg, list(ckpt["class_names"]), ckpt


def state_digest(model: nn.Module) -> str:
    """sha256 over the parameters and buffers: equal on every DDP rank after a step."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
