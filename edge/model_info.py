"""What an exported detector declares about itself (ONNX metadata written by `fod export`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Dict, List, Tuple

from .errors import FodError

FORMAT = "pharma-fod/gfl-onnx/1"


@dataclass(frozen=True)
class ModelInfo:
    class_names: List[str]
    input_size: Tuple[int, int]  # W, H the graph was exported for
    level_counts: List[int]  # anchor points per pyramid level, in output order
    checkpoint_sha256: str  # the training checkpoint it came from
    arch: str

    def to_metadata(self) -> Dict[str, str]:
        return {
            "format": FORMAT,
            "class_names": json.dumps(self.class_names, ensure_ascii=False),
            "input_size": f"{self.input_size[0]}x{self.input_size[1]}",
            "level_counts": json.dumps(self.level_counts),
            "checkpoint_sha256": self.checkpoint_sha256,
            "arch": self.arch,
        }

    @classmethod
    def from_metadata(cls, meta: Dict[str, str], source: str) -> ModelInfo:
        if meta.get("format") != FORMAT:
            raise FodError(
                f"{source}: not a pharma-fod detector (metadata 'format' is {meta.get('format')!r})"
            )
        try:
            w, h = (int(v) for v in meta["input_size"].split("x"))
            return cls(
                class_names=list(json.loads(meta["class_names"])),
                input_size=(w, h),
                level_counts=[int(v) for v in json.loads(meta["level_counts"])],
                checkpoint_sha256=meta["checkpoint_sha256"],
                arch=meta["arch"],
            )
        except (KeyError, ValueError) as e:
            raise FodError(f"{source}: metadata missing or malformed: {e}") from None
