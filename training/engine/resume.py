"""What `--resume` may change: a run resumed with its own recipe ends as the run never
stopped would have; one resumed with another is said to be something else."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge.errors import FodError

# What a run's training is, as opposed to where it writes, how often it logs or saves and
# how far it goes this time (--max-iters). The architecture is the checkpoint's own.
RECIPE = ("data", "size", "crop", "photometric", "blur", "epochs", "batch", "lr", "momentum",
          "weight_decay", "warmup_iters", "grad_clip", "seed", "amp", "assign", "replay",
          "replay_share", "ema")  # fmt: skip
PATHS = ("data", "replay", "teacher")
TEACHER_SHA = "teacher_sha256"  # a distillation's teacher by content: a path can be rewritten


def resume_changes(
    saved: Dict[str, Any], now: Dict[str, Any], keys: Sequence[str] = RECIPE
) -> List[str]:
    """One line per setting of `keys` the resumed run gives another value than the run had
    (`TrainConfig.to_json` of both, or `DistillConfig`'s; keys an older checkpoint lacks are
    not compared)."""

    def same(k: str) -> bool:
        a, b = saved[k], now[k]
        if k in PATHS and a is not None and b is not None:
            return Path(a).resolve() == Path(b).resolve()
        return json.dumps(a) == json.dumps(b)  # a tuple and the list it was saved as agree

    return [
        f"--{k.replace('_', '-')} {json.dumps(now[k])} where the run had {json.dumps(saved[k])}: "
        "it goes on as another run than the one that stopped"
        for k in keys
        if k in saved and k in now and not same(k)
    ]


def distill_resume_changes(saved: Optional[Dict[str, Any]], now: Dict[str, Any]) -> List[str]:
    """`resume_changes` of a distillation's settings (`DistillConfig.to_json` and the
    teacher file's TEACHER_SHA, as its checkpoint records them). A plain run's checkpoint,
    or one trained with another method or residual switch (other modules beside the
    student), raises FodError."""
    if saved is None:
        raise FodError(
            "a `fod train` checkpoint, not a distillation's: start one from it with "
            "`fod distill --init`"
        )
    structure = ("method", "residual")  # what is trained beside the student
    for key in structure:
        if saved.get(key) != now[key]:
            raise FodError(
                f"the run distilled with {key} {saved.get(key)!r}, this one {now[key]!r}: "
                "resume it with its own --method and switches"
            )
    was, now_sha = saved.get(TEACHER_SHA), now.get(TEACHER_SHA)
    known = was is not None and now_sha is not None
    # By content where both are known: a copy elsewhere is the same teacher, a file
    # retrained in place is not.
    skip = (*structure, TEACHER_SHA, *(("teacher",) if known else ()))
    changes = resume_changes(saved, now, [k for k in now if k not in skip])
    if known and was != now_sha:
        changes.append(
            f"--teacher {now['teacher']} is not the file the run distilled from (sha256 "
            "differs): it goes on as another run than the one that stopped"
        )
    return changes


def check_resume_step(
    cfg: Any, ckpt: Dict[str, Any], step: int, steps_per_epoch: int, world_size: int
) -> None:
    """A mid-epoch checkpoint resumes only where its batches mean the same images."""
    if not step:
        return
    was = (ckpt.get("batch"), ckpt.get("world_size"))
    if was != (cfg.batch, world_size):
        raise FodError(
            f"{cfg.resume}: taken {step} batches into an epoch with --batch {was[0]} on "
            f"{was[1]} process(es); resume it with the same, not --batch {cfg.batch} on "
            f"{world_size}"
        )
    if step >= steps_per_epoch:
        raise FodError(
            f"{cfg.resume}: {step} batches into an epoch of {steps_per_epoch}: not this data"
        )
