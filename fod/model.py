"""Model verbs: `fod info`, `fod train`, `fod distill`, `fod export`, `fod eval`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fod.args import add_switch, non_negative_number, positive_int, size_wh

ARCH_CHOICES = ("gfl-r18", "gfl-r50", "gfl-r101")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameters and GMACs of an architecture")
    p.add_argument("--arch", choices=ARCH_CHOICES, default="gfl-r18")
    p.add_argument("--teacher", action="store_true", help="the teacher's FPN (CARAFE upsampling)")
    p.add_argument("--num-classes", type=positive_int, default=3)
    p.add_argument("--size", type=size_wh, default=(1280, 800), help="WxH (default 1280x800)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a GFL detector (torchrun for several GPUs or nodes)")
    _train_args(p)
    p.add_argument(
        "--teacher",
        action="store_true",
        help="the teacher's FPN with CARAFE upsampling (use with --arch gfl-r50 or gfl-r101)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "distill",
        help="distil a student from a trained teacher (the paper's method or a baseline)",
    )
    _train_args(p)
    p.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint (.pt)")
    p.add_argument(
        "--method",
        choices=("ours", "none", "mimic", "ld", "pkd", "fgd", "crosskd"),
        default="ours",
        help="ours: residual feature distillation + LD; the others: the paper's baselines",
    )
    p.add_argument("--no-noise", action="store_true", help="ablation: no student noise")
    p.add_argument("--no-residual", action="store_true", help="ablation (ours): no adapters")
    p.add_argument("--no-ld", action="store_true", help="ablation (ours): no LD")
    p.add_argument("--no-vlr", action="store_true", help="LD on the positives only")
    p.add_argument(
        "--features",
        choices=("raw", "own", "teacher"),
        default="raw",
        help="ours: the FPN maps compared - raw (default, as mimic), each normalised per "
        "channel by its own statistics (as PKD), or both by the teacher's",
    )
    p.add_argument(
        "--raw-features",
        dest="features",
        action="store_const",
        const="raw",
        help="the same as --features raw (the default)",
    )
    p.add_argument(
        "--feature-weight",
        type=non_negative_number,
        help="feature loss weight (default 1 on raw maps: ours, mimic; 6 on normalised maps: "
        "pkd, ours --features own|teacher)",
    )
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser(
        "export", help="checkpoint -> ONNX (raw-pixel input, dense boxes and scores)"
    )
    p.add_argument("--weights", type=Path, required=True, help="checkpoint (.pt)")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.add_argument("--size", type=size_wh, help="input WxH (default: the size it was trained at)")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--no-simplify", action="store_true", help="skip onnxsim")
    p.add_argument(
        "--input",
        choices=("uint8", "float"),
        default="uint8",
        help="uint8: the graph takes camera pixels (RGB [N,H,W,3]; default); "
        "float: float32 [N,3,H,W] 0-255, as the first bundles",
    )
    p.add_argument(
        "--mono", action="store_true", help="with --input uint8: grey [N,H,W] for mono cameras"
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "eval", help="AP50, AP, AP_small, AR, AR_small of a checkpoint or ONNX model"
    )
    p.add_argument("--weights", type=Path, required=True, help="checkpoint (.pt) or exported .onnx")
    p.add_argument("--data", type=Path, required=True, help="COCO set to evaluate on")
    p.add_argument("--size", type=size_wh, help="model input WxH (default: the training size)")
    p.add_argument("--out", type=Path, help="folder for PR curves and the detection grid (PNG)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)


def _train_args(p: argparse.ArgumentParser) -> None:
    """The options `fod train` and `fod distill` share (one loop runs both)."""
    p.add_argument(
        "--data", type=Path, required=True, help="training set (annotations.json + images/)"
    )
    p.add_argument("--val", type=Path, help="validation set, evaluated each --eval-interval epochs")
    p.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        help="default gfl-r18; gfl-r50 for a --teacher",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="run folder: checkpoints, TensorBoard, metrics"
    )
    p.add_argument(
        "--size", type=size_wh, default=(1280, 800), help="model input WxH (default 1280x800)"
    )
    p.add_argument(
        "--crop",
        type=size_wh,
        help="train on native-resolution crops WxH (tiny particles keep pixels)",
    )
    p.add_argument(
        "--photometric",
        type=float,
        default=1.0,
        help="strength of the brightness/contrast/gamma jitter (default 1: +-0.1, +-15 %%, "
        "+-0.15; 0 off)",
    )
    p.add_argument(
        "--blur", type=float, default=0.0, help="chance of a Gaussian blur per view (default 0)"
    )
    p.add_argument("--epochs", type=positive_int, default=12)
    p.add_argument("--batch", type=positive_int, default=2, help="images per process (default 2)")
    p.add_argument("--lr", type=float, help="base lr (default 0.01 x global batch / 16)")
    p.add_argument("--warmup-iters", type=int, default=500)
    p.add_argument("--grad-clip", type=float, help="max gradient norm (default: none)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes per process")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_switch(
        p,
        "amp",
        None,
        "mixed precision (default: on with CUDA, float16; on the CPU --amp trains in "
        "bfloat16, fast where the CPU has AMX or AVX512-BF16)",
    )
    p.add_argument("--resume", type=Path, help="continue from a last.pt")
    p.add_argument(
        "--init",
        type=Path,
        help="fine-tune: start from this checkpoint (its architecture and weights; a trained "
        "or distilled student), e.g. on a site's own labelled images",
    )
    p.add_argument(
        "--replay",
        type=Path,
        help="with --init on a site's images: also train on this set (the one the model "
        "learnt from), --replay-share of every epoch, so it does not forget it",
    )
    p.add_argument(
        "--replay-share",
        type=float,
        default=0.5,
        help="share of each epoch's images drawn from --replay (default 0.5)",
    )
    p.add_argument(
        "--assign",
        choices=("atss-near", "atss"),
        default="atss-near",
        help="atss-near (default): a box no anchor centre falls into (2-5 px specks) takes its "
        "nearest anchor; atss: the paper's plain ATSS",
    )
    p.add_argument("--backbone-weights", type=Path, help="local ImageNet ResNet state dict")
    p.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="from scratch: zero each residual block's last BN scale, so deep backbones "
        "start as shallow ones",
    )
    p.add_argument(
        "--fpn-channels", type=positive_int, default=256, help="FPN/head width (multiple of 32)"
    )
    p.add_argument("--stacked-convs", type=positive_int, default=4, help="convs per head tower")
    p.add_argument(
        "--max-iters", type=positive_int, help="stop after this many iterations (smoke runs)"
    )
    p.add_argument(
        "--eval-interval", type=positive_int, default=1, help="epochs between validations"
    )
    p.add_argument(
        "--ema",
        type=float,
        default=0.0,
        metavar="DECAY",
        help="evaluate, keep and export a moving average of the weights with this decay "
        "(e.g. 0.998; ramped in over the first steps); default 0: the last step's weights",
    )
    p.add_argument(
        "--save-every",
        type=int,
        default=0,
        help="also save last.pt every N iterations, so a killed run resumes mid-epoch "
        "(default 0: at epoch ends only)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def cmd_info(args: argparse.Namespace) -> int:
    from training.complexity import measure
    from training.models.config import arch_config

    c = measure(arch_config(args.arch, args.num_classes, teacher=args.teacher), args.size)
    res = {
        "arch": args.arch,
        "teacher": args.teacher,
        "size": list(args.size),
        "params_total": c.params_total,
        "params_trainable": c.params_trainable,
        "gmacs": round(c.gmacs, 3),
    }
    if args.json:
        print(json.dumps(res))
    else:
        print(
            f"{args.arch}{' (teacher, CARAFE FPN)' if args.teacher else ''} "
            f"at {args.size[0]}x{args.size[1]}: "
            f"{c.params_total / 1e6:.2f} M params ({c.params_trainable / 1e6:.2f} M trainable), "
            f"{c.gmacs:.1f} GMACs"
        )
    return 0


def _train_config(args: argparse.Namespace, teacher: bool = False):
    from training.engine.trainer import TrainConfig

    return TrainConfig(
        data=args.data,
        out=args.out,
        val=args.val,
        arch=args.arch or ("gfl-r50" if teacher else "gfl-r18"),
        teacher=teacher,
        size=args.size,
        crop=args.crop,
        photometric=args.photometric,
        blur=args.blur,
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        warmup_iters=args.warmup_iters,
        grad_clip=args.grad_clip,
        workers=args.workers,
        seed=args.seed,
        amp=args.amp,
        device=args.device,
        resume=args.resume,
        backbone_weights=args.backbone_weights,
        zero_init_residual=args.zero_init_residual,
        fpn_channels=args.fpn_channels,
        stacked_convs=args.stacked_convs,
        max_iters=args.max_iters,
        eval_interval=args.eval_interval,
        save_every=args.save_every,
        ema=args.ema,
        assign=args.assign,
        init=args.init,
        replay=args.replay,
        replay_share=args.replay_share,
    )


def _print_summary(s: dict, args: argparse.Namespace, what: str) -> int:
    if s["rank"] != 0:  # under torchrun, one summary: rank 0's
        return 0
    if args.json:
        print(json.dumps({k: v for k, v in s.items() if k not in ("history", "config", "rank")}))
    else:
        from calibration.metrics import show

        m = s["metrics"]
        tail = " ".join(f"{k}={show(v)}" for k, v in m.items()) if m else "no validation set"
        print(
            f"{what} {s['arch']} for {s['iterations']} iterations "
            f"on {s['world_size']} process(es); {tail}; "
            f"checkpoints in {args.out}"
        )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from training.engine.trainer import train

    return _print_summary(train(_train_config(args, args.teacher)), args, "trained")


def cmd_distill(args: argparse.Namespace) -> int:
    from training.distill import DistillConfig, distill

    dcfg = DistillConfig(
        teacher=args.teacher,
        method=args.method,
        noise=not args.no_noise,
        residual=not args.no_residual,
        ld=not args.no_ld,
        vlr=not args.no_vlr,
        features=args.features,
        feature_weight=args.feature_weight,
    )
    return _print_summary(distill(_train_config(args), dcfg), args, f"distilled ({args.method})")


def cmd_export(args: argparse.Namespace) -> int:
    from training.export import export_onnx

    info = export_onnx(
        args.weights,
        args.out,
        args.size,
        args.opset,
        simplify=not args.no_simplify,
        input=args.input,
        mono=args.mono,
    )
    print(
        f"wrote {args.out}: {info.arch}, {len(info.class_names)} classes, "
        f"input {info.input_layout} {info.input_size[0]}x{info.input_size[1]}, "
        f"{sum(info.level_counts)} anchors"
    )
    return 0


def _print_metrics(m, as_json: bool) -> None:
    if as_json:
        print(json.dumps(m.to_dict()))
    else:
        from calibration.metrics import show

        print(" ".join(f"{k}={show(v)}" for k, v in m.to_dict().items()))


def cmd_eval(args: argparse.Namespace) -> int:
    from edge.errors import FodError
    from training.checkpoint import load_detector
    from training.data.coco import classes_hint
    from training.data.dataset import CocoDetection
    from training.engine.distributed import pick_device
    from training.evaluation import evaluate_model, evaluate_onnx
    from training.postprocess import GFLPostprocess

    data = CocoDetection(args.data).require_boxes("AP and AR are undefined on it")
    if args.weights.suffix == ".onnx":
        _print_metrics(evaluate_onnx(args.weights, data, args.out), args.json)
        return 0
    model, cfg, names, ckpt = load_detector(args.weights, num_classes=len(data.class_names))
    if names != data.class_names:
        raise FodError(
            f"{args.weights}: trained on classes {names}, {args.data} has {data.class_names}"
            + classes_hint(names, data.class_names)
        )
    size = args.size or tuple(ckpt.get("train_config", {}).get("size") or (1280, 800))
    if size[0] % 32 or size[1] % 32:
        raise FodError(f"--size {size[0]}x{size[1]}: both sides must be divisible by 32")
    device = pick_device(args.device, 0)
    m = evaluate_model(model.to(device), GFLPostprocess(cfg.head), data, size, device, args.out)
    _print_metrics(m, args.json)
    return 0
