"""One dataclass per component (docs/design.md, "The detector"); `ARCHS` names the presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Tuple

from edge.errors import FodError


@dataclass(frozen=True)
class BackboneConfig:
    depth: int = 18  # torchvision ResNet depth: 18, 50 or 101
    frozen_stages: int = 1  # stem + layer1 frozen: low-level filters transfer, and it saves memory
    norm_eval: bool = True  # BN in eval mode: detection batches are too small for batch statistics
    zero_init_residual: bool = False  # from scratch: each residual block starts as its shortcut


@dataclass(frozen=True)
class FPNConfig:
    channels: int = 256  # output width of every pyramid level
    num_outs: int = 5  # P3..P7: two extra stride-2 convs on top of P5 for large objects
    upsample: str = "nearest"  # top-down upsampling: "nearest" or "carafe" (the teacher's FDE)


@dataclass(frozen=True)
class HeadConfig:
    num_classes: int = 3
    stacked_convs: int = 4  # conv-GN-ReLU layers in each of the cls and reg towers
    reg_max: int = 16  # box side distances are distributions over 0..reg_max strides
    strides: Tuple[int, ...] = (8, 16, 32, 64, 128)
    prior_prob: float = 0.01  # initial foreground probability: keeps the focal loss stable early
    anchor_scale: float = 8.0  # ATSS anchor box side, in strides


@dataclass(frozen=True)
class DetectorConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    fpn: FPNConfig = field(default_factory=FPNConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> DetectorConfig:
        head = dict(d["head"])
        head["strides"] = tuple(head["strides"])
        return cls(BackboneConfig(**d["backbone"]), FPNConfig(**d["fpn"]), HeadConfig(**head))


ARCHS = {
    "gfl-r18": 18,  # the student
    "gfl-r50": 50,  # the default teacher backbone and the paper's GFL baseline
    "gfl-r101": 101,
}


def arch_config(
    arch: str,
    num_classes: int,
    teacher: bool = False,
    pretrained: bool = True,
    zero_init_residual: bool = False,
    **fpn_head: Any,
) -> DetectorConfig:
    """The config of a named architecture; `teacher` switches the FPN to CARAFE upsampling.

    `pretrained=False` (no ImageNet state dict) trains the whole backbone with batch statistics:
    frozen random filters are noise, and BN frozen at its initial statistics normalises nothing.
    `zero_init_residual` applies from scratch only: pretrained weights bring their own scales.
    """
    if arch not in ARCHS:
        raise FodError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}")
    if num_classes < 1:
        raise FodError(f"--num-classes must be >= 1, got {num_classes}")
    fpn_keys = {"channels"}
    fpn = FPNConfig(
        upsample="carafe" if teacher else "nearest",
        **{k: v for k, v in fpn_head.items() if k in fpn_keys},
    )
    head = HeadConfig(
        num_classes=num_classes, **{k: v for k, v in fpn_head.items() if k not in fpn_keys}
    )
    backbone = (
        BackboneConfig(depth=ARCHS[arch])
        if pretrained
        else BackboneConfig(
            depth=ARCHS[arch],
            frozen_stages=-1,
            norm_eval=False,
            zero_init_residual=zero_init_residual,
        )
    )
    return DetectorConfig(backbone, fpn, head)
