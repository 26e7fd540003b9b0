"""The synthetic generator: determinism, COCO validity, tight boxes, sizes, negatives, sequences."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fod.cli import main
from training.data.synth import CLASS_NAMES, SynthConfig, render_image, render_sequence
from training.data.synth_sprites import VISIBLE_ABSORB, composite
from training.data.synth_writer import item_rng, write_synthetic_set

from .conftest import SMALL


def _digest(root: Path) -> dict:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_any_workers(tmp_path: Path, small_set: Path) -> None:
    again = tmp_path / "again"
    write_synthetic_set(again, images=12, sequences=4, cfg=SMALL, seed=7, workers=2, progress=False)
    a, b = _digest(small_set), _digest(again)
    assert len(a) == 12 + 4 + 3  # images, videos, two JSON files and the preview
    assert a == b


def test_different_seed_different_set(tmp_path: Path, small_set: Path) -> None:
    other = tmp_path / "other"
    write_synthetic_set(other, images=12, sequences=4, cfg=SMALL, seed=8, progress=False)
    a, b = _digest(small_set), _digest(other)
    assert a.keys() == b.keys()
    assert all(a[k] != b[k] for k in a if k.startswith("images/"))


def test_coco_valid_for_pycocotools(small_set: Path) -> None:
    gt = COCO(str(small_set / "annotations.json"))
    assert [c["name"] for c in gt.loadCats(gt.getCatIds())] == list(CLASS_NAMES)
    anns = gt.loadAnns(gt.getAnnIds())
    assert anns, "a 12-image set should hold some particles"
    # Truth scored as detections gives a perfect AP: ids, boxes and areas are consistent.
    dets = gt.loadRes(
        [
            {
                "image_id": a["image_id"],
                "category_id": a["category_id"],
                "bbox": a["bbox"],
                "score": 1.0,
            }
            for a in anns
        ]
    )
    ev = COCOeval(gt, dets, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)
    for rec in gt.dataset["images"]:
        img = cv2.imread(str(small_set / "images" / rec["file_name"]), cv2.IMREAD_UNCHANGED)
        assert img.shape == (rec["height"], rec["width"]) and img.dtype == np.uint8


@pytest.mark.parametrize("seed", range(6))
def test_boxes_tight_around_rendered_pixels(seed: int) -> None:
    cfg = SynthConfig(negative_fraction=0.0)
    frame = render_image(item_rng(seed, 0, 0), cfg)
    labelled = frame.labelled
    assert labelled
    for obj in labelled:
        x, y, w, h = obj.box
        s = obj.sprite
        # The pixels a sprite changes are exactly its mask ...
        flat = np.full((cfg.height, cfg.width), 0.5, np.float32)
        composite(flat, s)
        ys, xs = np.nonzero(flat != 0.5)
        assert xs.min() == x and ys.min() == y  # ... and the box touches them on all sides
        assert xs.max() == x + w - 1 and ys.max() == y + h - 1
        # No other labelled particle draws inside this box.
        for other in labelled:
            if other is obj:
                continue
            oys, oxs = np.nonzero(other.sprite.mask)
            oxs, oys = oxs + other.sprite.x0, oys + other.sprite.y0
            inside = (oxs >= x) & (oxs < x + w) & (oys >= y) & (oys < y + h)
            assert not inside.any()
        assert s.absorb.max() >= VISIBLE_ABSORB or s.glow.max() > 0


def test_size_distribution_and_negatives() -> None:
    cfg = SynthConfig()
    areas, negatives, classes = [], 0, set()
    for i in range(40):
        frame = render_image(item_rng(3, 0, i), cfg)
        negatives += not frame.labelled
        for o in frame.labelled:
            areas.append(o.box[2] * o.box[3])
            classes.add(o.category_id)
    areas = np.array(areas)
    assert len(areas) > 30
    assert (areas < 32 * 32).mean() > 0.75  # COCO "small"
    assert negatives / 40 >= 0.2
    assert classes == {1, 2, 3}


def _reject_sequence_with_scratch(cfg: SynthConfig):
    for seed in range(200):
        reject, frames = render_sequence(item_rng(seed, 1, 0), cfg)
        frames = list(frames)
        kinds = {o.sprite.kind for o in frames[0].objects}
        if reject and "scratch" in kinds:
            return frames
    raise AssertionError("no reject container with a scratch in 200 seeds")


def test_sequence_particles_move_scratches_stay() -> None:
    cfg = SynthConfig(width=640, height=480, frames=8)
    frames = _reject_sequence_with_scratch(cfg)
    by_track: dict = {}
    for f in frames:
        for o in f.objects:
            by_track.setdefault((o.track_id, o.sprite.kind), []).append(o.box)
    for (_, kind), boxes in by_track.items():
        if kind == "scratch":
            assert len(set(boxes)) == 1, "a scratch on the glass never moves"
        if kind in CLASS_NAMES:
            centres = np.array([[b[0] + b[2] / 2, b[1] + b[3] / 2] for b in boxes])
            travel = np.linalg.norm(centres[-1] - centres[0])
            assert travel > 3, f"{kind} should drift or sink, moved {travel:.1f} px"


def test_sequence_video_lossless_and_truth_matches(small_set: Path) -> None:
    meta = json.loads((small_set / "sequences.json").read_text())
    containers = meta["containers"]
    assert len(containers) == 4
    for c in containers:
        reject, frames = render_sequence(item_rng(7, 1, c["id"] - 1), SMALL)
        assert c["label"] == ("reject" if reject else "accept")
        assert (c["label"] == "reject") == any(c["frames"])
        cap = cv2.VideoCapture(str(small_set / c["path"]))
        n = 0
        for truth, frame in zip(c["frames"], frames):
            ok, got = cap.read()
            assert ok
            assert np.array_equal(got[..., 0], frame.image), "video must be lossless"
            want = [
                {"bbox": list(o.box), "category_id": o.category_id, "track_id": o.track_id}
                for o in frame.labelled
            ]
            assert truth == want
            n += 1
        assert not cap.read()[0]
        cap.release()
        assert n == c["num_frames"] == SMALL.frames


def test_preview_written(small_set: Path) -> None:
    img = cv2.imread(str(small_set / "preview.png"))
    assert img is not None and img.shape[1] >= 4 * 200


def test_cli_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    rc = main(
        ["synth", "--out", str(out), "--images", "1", "--sequences", "0", "--size", "256x160"]
    )
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_synth_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "d"
    rc = main(
        [
            "synth",
            "--out",
            str(out),
            "--images",
            "3",
            "--sequences",
            "1",
            "--frames",
            "2",
            "--size",
            "256x160",
            "--workers",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["images"] == 3 and counts["sequences"] == 1
    assert not list(tmp_path.glob(".d.*"))  # no temp folder left behind


def test_hard_preset_is_fainter_and_noisier(tmp_path) -> None:
    """`--preset hard`: the same scenes' particles with less contrast against their
    surroundings; the default set's bytes are untouched (its own tests hold them)."""

    def contrast(root):
        ann = json.loads((root / "annotations.json").read_text())
        files = {im["id"]: im["file_name"] for im in ann["images"]}
        out = []
        for a in ann["annotations"]:
            img = cv2.imread(str(root / "images" / files[a["image_id"]]), cv2.IMREAD_GRAYSCALE)
            x, y, w, h = (int(v) for v in a["bbox"])
            box = img[y : y + h, x : x + w].astype(float)
            ring = img[max(0, y - 6) : y + h + 6, max(0, x - 6) : x + w + 6].astype(float)
            out.append(abs(np.median(ring) - box.min()))
        return float(np.median(out))

    for preset in ("default", "hard"):
        assert (
            main(
                [
                    "synth",
                    "--out",
                    str(tmp_path / preset),
                    "--images",
                    "12",
                    "--sequences",
                    "0",
                    "--size",
                    "640x384",
                    "--seed",
                    "5",
                    "--preset",
                    preset,
                    "--workers",
                    "1",
                ]
            )
            == 0
        )
    assert contrast(tmp_path / "hard") < 0.8 * contrast(tmp_path / "default")


@pytest.mark.parametrize("verb", ["synth", "simulate", "calibrate"])
def test_a_negative_seed_is_refused_by_the_parser(verb: str, capsys) -> None:
    """numpy takes no seed below 0: before, a traceback from deep in the verb."""
    with pytest.raises(SystemExit) as e:
        main([verb, "--seed", "-1"])
    assert e.value.code == 2
    assert "argument --seed: expected an integer >= 0, got -1" in capsys.readouterr().err
