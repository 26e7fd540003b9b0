"""Training end to end on CPU: loss falls, eval gives all metrics, torchrun ranks stay in sync."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

import pytest
import torch

from edge.preprocess import boxes_to_model, letterbox
from fod.cli import main
from training.checkpoint import load_detector
from training.data.dataset import CocoDetection
from training.models import build_detector
from training.models.config import arch_config

from .conftest import SMALL_MODEL, torchrun


def _fixed_batch(root: Path, n: int = 8, size: Tuple[int, int] = (320, 256)):
    data = CocoDetection(root)
    xs, gts = [], []
    for i in range(n):
        s = data[i]
        img, lb = letterbox(s.image, size)
        xs.append(torch.from_numpy(img.transpose(2, 0, 1).copy()).float())
        gts.append(
            {
                "boxes": torch.from_numpy(boxes_to_model(s.boxes, lb)),
                "labels": torch.from_numpy(s.labels),
            }
        )
    return torch.stack(xs), gts


def _other_classes(tmp_path: Path, edit) -> Path:
    """A two-image set whose category list `edit` (in place) changes."""
    from training.data.synth import SynthConfig
    from training.data.synth_writer import write_synthetic_set

    other = tmp_path / "other"
    write_synthetic_set(other, 2, 0, SynthConfig(width=320, height=256), seed=1, progress=False)
    data = json.loads((other / "annotations.json").read_text())
    edit(data["categories"])
    (other / "annotations.json").write_text(json.dumps(data))
    return other


def test_loss_falls_on_fixed_batch(trained: Path, small_set: Path) -> None:
    x, gts = _fixed_batch(small_set)
    torch.manual_seed(0)  # the trainer seeds the same way before building: initial weights
    before, crit, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=1))
    after, _, _, _ = load_detector(trained / "last.pt")
    with torch.no_grad():
        l0 = sum(crit(*before.eval()(x), gts).values()).item()
        l1 = sum(crit(*after(x), gts).values()).item()
    assert l1 < 0.9 * l0, (l0, l1)
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["iterations"] == 30 and summary["images_per_s"] > 0
    # no validation set: the steps' own rate is the whole rate
    assert summary["eval_seconds"] == 0
    assert summary["step_images_per_s"] == summary["images_per_s"]
    assert (trained / "best.pt").is_file()
    assert list((trained / "tb").glob("events.out.tfevents.*"))


def test_validation_inside_training_is_timed_apart(small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(small_set),
        "--val",
        str(small_set),
        "--out",
        str(out),
        "--epochs",
        "1",
        "--max-iters",
        "3",
        "--batch",
        "2",
        "--device",
        "cpu",
        *SMALL_MODEL,
    ]
    assert main(argv) == 0
    s = json.loads((out / "metrics.json").read_text())
    assert set(s["metrics"]) >= {"ap50", "ap"} and s["eval_seconds"] > 0
    # a planner sizing a run from step_images_per_s must not pay for validation per step
    assert s["step_images_per_s"] > s["images_per_s"]


def test_eval_gives_all_metrics_and_pictures(
    trained: Path, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(
        [
            "eval",
            "--weights",
            str(trained / "last.pt"),
            "--data",
            str(small_set),
            "--out",
            str(tmp_path / "ev"),
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert rc == 0
    m = json.loads(capsys.readouterr().out)
    assert set(m) == {"ap50", "ap", "ap_small", "ar", "ar_small"}
    assert all(0.0 <= v <= 1.0 for v in m.values())
    assert (tmp_path / "ev" / "pr_curves.png").stat().st_size > 0
    assert (tmp_path / "ev" / "detections.png").stat().st_size > 0


def test_resume_continues(trained: Path, small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    args = [
        "train",
        "--data",
        str(small_set),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch",
        "4",
        *SMALL_MODEL,
    ]
    assert main([*args, "--max-iters", "3"]) == 0  # one epoch of 3 iterations, then stop
    assert main([*args, "--resume", str(out / "last.pt")]) == 0
    assert json.loads((out / "metrics.json").read_text())["iterations"] == 6


def test_init_fine_tunes_from_a_checkpoint(trained: Path, small_set: Path, tmp_path: Path) -> None:
    # No --fpn-channels/--stacked-convs: the checkpoint's architecture is the one trained.
    out = tmp_path / "ft"
    base = ["train", "--data", str(small_set), "--out", str(out), "--size", "320x256"]
    args = [*base, "--init", str(trained / "last.pt"), "--workers", "0", "--batch", "4"]
    assert main([*args, "--max-iters", "2", "--lr", "0"]) == 0
    src, cfg, _, _ = load_detector(trained / "last.pt")
    got, got_cfg, _, ckpt = load_detector(out / "last.pt")
    assert got_cfg == cfg and ckpt["train_config"]["init"] == str(trained / "last.pt")
    # ... and its record names that architecture, not the flags' defaults (256 / 4)
    tc = ckpt["train_config"]
    assert (tc["fpn_channels"], tc["stacked_convs"]) == (cfg.fpn.channels, cfg.head.stacked_convs)
    assert (tc["fpn_channels"], tc["stacked_convs"]) != (256, 4)
    # lr 0: the parameters are the checkpoint's (batch-norm statistics still move).
    for (name, a), (_, b) in zip(src.named_parameters(), got.named_parameters()):
        assert torch.equal(a, b), name
    assert main([*args, "--resume", str(out / "last.pt"), "--out", str(tmp_path / "x")]) == 2


def test_zero_init_residual_reaches_the_trained_backbone(small_set: Path, tmp_path: Path) -> None:
    # lr 0: the saved weights are the initial ones; each block's last BN scale is 0 only
    # with the flag (torchvision's own init sets it to 1).
    scales = {}
    for flag in ([], ["--zero-init-residual"]):
        out = tmp_path / ("zi" if flag else "plain")
        args = ["train", "--data", str(small_set), "--out", str(out), *SMALL_MODEL, *flag]
        assert main([*args, "--batch", "2", "--max-iters", "1", "--lr", "0"]) == 0
        model, _, _, _ = load_detector(out / "last.pt")
        blocks = [*model.backbone.layer1, *model.backbone.layer4]  # R18: BasicBlocks
        scales[bool(flag)] = torch.cat([b.bn2.weight for b in blocks])
    assert torch.all(scales[True] == 0) and torch.all(scales[False] == 1)


def test_init_other_classes_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = _other_classes(tmp_path, lambda cats: cats[0].update(name="hair"))
    rc = main(
        [
            "train",
            "--data",
            str(other),
            "--out",
            str(tmp_path / "o"),
            "--init",
            str(trained / "last.pt"),
            *SMALL_MODEL,
        ]
    )
    assert rc == 2 and "trained on classes" in capsys.readouterr().err


def test_replay_mix_draws_its_share_from_the_replay_set(small_set: Path, tmp_path: Path) -> None:
    import numpy as np

    from training.data.dataset import ReplayMix

    own = CocoDetection(_other_classes(tmp_path, lambda cats: None))  # 2 images, same classes
    replay = CocoDetection(small_set)
    replay_ids = {r.id for r in replay.coco.images}
    mix = ReplayMix(own, replay, 0.6)
    assert len(mix) == 2 + 3 and mix.class_names == own.class_names
    assert [mix.sample(i, np.random.default_rng(0)).image_id for i in range(2)] == [
        r.id for r in own.coco.images
    ]

    def drawn(epoch: int) -> list:
        return [mix.sample(i, np.random.default_rng([0, epoch, i])).image_id for i in range(2, 5)]

    assert set(drawn(0)) <= replay_ids and drawn(0) == drawn(0)  # repeatable per (epoch, index)
    assert len({tuple(drawn(e)) for e in range(6)}) > 1  # other replay images in other epochs


def test_fine_tune_with_replay_and_bad_replay(
    trained: Path, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    site = _other_classes(tmp_path, lambda cats: None)
    base = ["train", "--data", str(site), "--init", str(trained / "last.pt"), "--size", "320x256"]
    base += ["--workers", "0", "--batch", "4", "--replay", str(small_set)]
    out = tmp_path / "ft"
    assert main([*base, "--out", str(out), "--epochs", "1"]) == 0
    got = json.loads((out / "metrics.json").read_text())
    assert got["iterations"] == 1  # 2 site + 2 replay images: one batch of 4 per epoch
    other = _other_classes(tmp_path / "o", lambda cats: cats[0].update(name="hair"))
    for extra, message in (
        (["--replay", str(other)], "replay classes"),
        (["--replay-share", "1"], "--replay-share 1.0"),
        (["--replay", str(tmp_path / "none")], "data folder not found"),
    ):
        capsys.readouterr()
        assert main([*base, *extra, "--out", str(tmp_path / "bad")]) == 2, extra
        assert message in capsys.readouterr().err
        assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--size", "300x256"], "divisible by 32"),
        (["--crop", "100x96"], "divisible by 32"),
        (["--resume", "/nonexistent/last.pt"], "--resume checkpoint not found"),
        (["--zero-init-residual", "--init", "/x/last.pt"], "bring their own weights"),
        (["--zero-init-residual", "--backbone-weights", "/x/r18.pth"], "bring their own weights"),
        # Before: NaN weights (--lr nan, --grad-clip nan) or none trained (--grad-clip 0) in
        # a checkpoint that exports, or a traceback from the optimizer or the data loader.
        (["--lr", "nan"], "--lr nan: expected a finite number >= 0"),
        (["--lr", "-1"], "--lr -1.0: expected a finite number >= 0"),
        (["--grad-clip", "0"], "--grad-clip 0.0: expected a finite number > 0"),
        (["--warmup-iters", "-5"], "--warmup-iters -5: expected an integer >= 0"),
        (["--workers", "-1"], "--workers -1: expected an integer >= 0"),
        (["--seed", "-1"], "--seed -1: expected an integer >= 0"),
    ],
)
def test_train_bad_input(
    small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra, message
) -> None:
    rc = main(
        ["train", "--data", str(small_set), "--out", str(tmp_path / "o"), *SMALL_MODEL, *extra]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not (tmp_path / "o").exists()


def test_train_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        main(
            ["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), *SMALL_MODEL]
        )
        == 2
    )
    assert "data folder not found" in capsys.readouterr().err


def test_resume_other_arch_refused(
    trained: Path, small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    rc = main(
        [
            "train",
            "--data",
            str(small_set),
            "--out",
            str(tmp_path / "o"),
            "--arch",
            "gfl-r50",
            "--resume",
            str(trained / "last.pt"),
            *SMALL_MODEL,
        ]
    )
    assert rc == 2 and "checkpoint is gfl-r18, not --arch gfl-r50" in capsys.readouterr().err


def test_resume_a_run_started_from_init_continues_the_checkpoints_model(
    small_set: Path, tmp_path: Path
) -> None:
    # The demo build's second schedule: --init from a zero-init first schedule. The model
    # trained is the checkpoint's (its config records zero_init_residual), so a resume
    # without --init must rebuild that one, not the flags' and refuse the mismatch.
    first, second = tmp_path / "first", tmp_path / "second"
    base = ["train", "--data", str(small_set), *SMALL_MODEL, "--batch", "4"]
    zi = ["--zero-init-residual", "--max-iters", "1", "--lr", "0", "--out", str(first)]
    assert main([*base, *zi]) == 0
    args = [*base, "--epochs", "2", "--out", str(second)]
    assert main([*args, "--init", str(first / "last.pt"), "--max-iters", "3"]) == 0
    assert main([*args, "--resume", str(second / "last.pt")]) == 0
    _, cfg, _, ckpt = load_detector(second / "last.pt")
    assert cfg == load_detector(first / "last.pt")[1] and cfg.backbone.zero_init_residual
    assert json.loads((second / "metrics.json").read_text())["iterations"] == 6
    assert ckpt["train_config"]["fpn_channels"] == cfg.fpn.channels  # the record says so too


def test_eval_other_class_count_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    other = _other_classes(tmp_path, lambda cats: cats.append({"id": 4, "name": "extra"}))
    assert main(["eval", "--weights", str(trained / "last.pt"), "--data", str(other)]) == 2
    assert "3 classes, the data has 4" in capsys.readouterr().err


def test_torchrun_two_processes_stay_in_sync(small_set: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    r = torchrun(
        "train", "--data", str(small_set), "--out", str(out), "--epochs", "1",
        "--max-iters", "2", "--batch", "2", "--device", "cpu", *SMALL_MODEL,
    )  # fmt: skip
    # Rank 0's own traceback first: when it dies, the tail of stderr is rank 1's barrier error.
    rank0 = "\n".join(line for line in r.stderr.splitlines() if line.startswith("[rank0]"))
    assert r.returncode == 0, rank0[-3000:] + "\n...\n" + r.stderr[-2000:]
    s = json.loads((out / "metrics.json").read_text())
    assert s["world_size"] == 2 and s["iterations"] == 2
    digests = s["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    torch.manual_seed(0)
    init, _, _ = build_detector(arch_config("gfl-r18", 3, channels=32, stacked_convs=1))
    trained_model, _, _, _ = load_detector(out / "last.pt")
    moved = any(
        not torch.equal(a, b)
        for a, b in zip(init.state_dict().values(), trained_model.state_dict().values())
    )
    assert moved, "two DDP steps must change the weights"


def test_train_image_that_does_not_decode_is_one_line(
    small_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """An image that does not decode, met in a data loader worker process: the error names
    the file in one line, as from the main process, not the worker's traceback, and the
    run folder it made is gone (a folder that was there stays)."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(small_set, data)
    images = sorted((data / "images").iterdir())
    for path in images:  # every one: whichever the sampler draws first fails
        path.write_bytes(path.read_bytes()[:200])
    args = ["train", "--data", str(data), "--out", str(tmp_path / "o"), *SMALL_MODEL]
    args[args.index("--workers") + 1] = "1"
    assert main([*args, "--max-iters", "1", "--batch", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and "worker" not in err[0]
    assert err[0].startswith("fod train: error: " + str(data / "images"))
    assert "not a decodable image" in err[0]
    assert not (tmp_path / "o").exists()  # not even its TensorBoard log of nothing
    (tmp_path / "o").mkdir()
    assert main([*args, "--max-iters", "1", "--batch", "2"]) == 2 and (tmp_path / "o").is_dir()
