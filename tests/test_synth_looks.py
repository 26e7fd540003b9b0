"""`fod synth --look`: every family renders, is deterministic, keeps boxes tight and records
its look; the classic look keeps the first sets' bytes; `random` never draws the held-out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from training.data.synth import SynthConfig, render_image, render_sequence
from training.data.synth_looks import FAMILIES, HELD_OUT, TRAIN_FAMILIES, composite_look
from training.data.synth_writer import item_rng, write_synthetic_set

# sha256 of every file of `fod synth --images 6 --sequences 2 --frames 4 --size 320x256
# --seed 5 --workers 1`, written before the look families existed; of a video, its decoded
# frames' pixels (the FFV1 file's own bytes change with the OpenCV that encodes it: 5.1 does
# not write 5.0's); the preview, a picture for people, is left out (its text rendering too).
CLASSIC_BYTES = {
    "annotations.json": "34a43ca10145f4dc704bcd01e0535b5b134ec24e9034fd68721520ce0bc84f03",
    "images/000000.png": "d9e289ae90d947582050d76c3bd6f90aefca4368b242016291d087763088c915",
    "images/000001.png": "2681ef328f03bf5cad6f64c3af392379eaa27309688d36e37393fd73ef2ad2aa",
    "images/000002.png": "d3d00fa814d50b42c713ba96adb0790d42cdfcdd6b925eeeeca27400b2bd7550",
    "images/000003.png": "f7e987d7bf16fd19f69c6805756ffaeeb2b9c4ad6c26e1f19f255aef31e1bb11",
    "images/000004.png": "40ba8fcf818dafc118713d0a155d6f5323f5423ba5f9b639db10fc313e0342a8",
    "images/000005.png": "ccaafe294aaecbe54b768892b8250f6ade55dc562c6208af61b8c263a9235b9f",
    "sequences.json": "582484672bc6e35fd37587b0c0de9c6dd6adc7e9486b6fe184a406784b06a73f",
    "sequences/c000001.avi": "6fe722703902d4b6c949b2931abf48ce543211c458671fb04ee541ae873aecb1",
    "sequences/c000002.avi": "6b8a7f16adc5969e3614fa03143c5187d567de63d11d4351f6f099ce49dbbe67",
}
CFG = SynthConfig(width=640, height=384, negative_fraction=0.0, frames=6)


def _digest(root: Path) -> dict:
    return {
        p.relative_to(root).as_posix(): _content(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "preview.png"
    }


def _content(path: Path) -> str:
    if path.suffix != ".avi":
        return hashlib.sha256(path.read_bytes()).hexdigest()
    h, cap = hashlib.sha256(), cv2.VideoCapture(str(path))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        h.update(frame.tobytes())
    cap.release()
    return h.hexdigest()


def test_classic_look_keeps_the_first_sets_bytes(tmp_path: Path) -> None:
    cfg = SynthConfig(width=320, height=256, frames=4)
    write_synthetic_set(tmp_path / "s", images=6, sequences=2, cfg=cfg, seed=5, progress=False)
    assert _digest(tmp_path / "s") == CLASSIC_BYTES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_renders_deterministic_with_tight_boxes(family: str) -> None:
    cfg = SynthConfig(width=640, height=384, negative_fraction=0.0, look=family)
    for i in range(4):
        a = render_image(item_rng(11, 0, i), cfg)
        b = render_image(item_rng(11, 0, i), cfg)
        assert np.array_equal(a.image, b.image) and a.look == b.look
        assert a.look is not None and a.look.family == family
        assert a.image.dtype == np.uint8 and a.image.shape == (384, 640)
        assert a.image.std() > 3  # a scene, not a flat frame
        for obj in a.labelled:
            x, y, w, h = obj.box
            flat = np.full((384, 640), 0.3, np.float32)
            composite_look(flat, obj.sprite, a.look)
            ys, xs = np.nonzero(flat != 0.3)
            # The pixels the look's compositing changes are exactly the box's extent.
            assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x, y, x + w - 1, y + h - 1)
    assert render_image(item_rng(12, 0, 0), cfg).image.tobytes() != a.image.tobytes()


def test_looks_differ_between_families() -> None:
    means = {}
    for family in FAMILIES:
        cfg = SynthConfig(width=640, height=384, look=family)
        means[family] = np.mean(
            [render_image(item_rng(3, 0, i), cfg).image.mean() for i in range(3)]
        )
    assert means["darkfield"] < 0.5 * means["vial"]  # dark field: a dark frame, glowing edges
    assert means["amber"] < means["vial"]  # amber glass passes less light


def test_random_draws_training_families_only() -> None:
    assert HELD_OUT and not set(HELD_OUT) & set(TRAIN_FAMILIES)
    cfg = SynthConfig(width=320, height=256, look="random")
    drawn = set()
    for i in range(60):
        f = render_image(item_rng(4, 0, i), cfg)
        drawn.add(f.look.family if f.look is not None else "classic")
    assert drawn == set(TRAIN_FAMILIES)


def test_sequence_bubbles_rise_and_set_records_looks(tmp_path: Path) -> None:
    cfg = SynthConfig(width=640, height=384, frames=6, look="ampoule")
    _, frames = render_sequence(item_rng(9, 1, 0), cfg)
    frames = list(frames)
    looks = {f.look for f in frames}
    assert len(looks) == 1  # one container, one look, every frame
    for tid in {o.track_id for o in frames[0].objects if o.sprite.kind == "bubble"}:
        ys = [o.box[1] for f in frames for o in f.objects if o.track_id == tid and o.box]
        assert ys[-1] <= ys[0]  # bubbles rise (or rest under the surface)
    out = tmp_path / "set"
    write_synthetic_set(out, images=3, sequences=1, cfg=cfg, seed=1, progress=False)
    coco = json.loads((out / "annotations.json").read_text())
    seqs = json.loads((out / "sequences.json").read_text())
    assert coco["info"]["look"] == "ampoule" and "look" not in coco["info"]["config"]
    assert all(im["look"]["family"] == "ampoule" for im in coco["images"])
    assert seqs["containers"][0]["look"]["container"] == "ampoule"


def test_cli_look_choice(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fod.cli import main

    out = tmp_path / "c"
    args = ["synth", "--out", str(out), "--images", "2", "--sequences", "0"]
    rc = main([*args, "--size", "320x256", "--look", HELD_OUT[0], "--workers", "1", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["images"] == 2
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "d"), "--look", "nonsense"])


def test_simulate_refuses_an_unknown_look(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fod.cli import main

    with pytest.raises(SystemExit) as e:  # argparse refuses it, as `fod synth --look` does
        main(["simulate", "--look", "neon", "--out", str(tmp_path / "sim")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--look: invalid choice: 'neon' (choose from" in err and "cartridge" in err
    assert not (tmp_path / "sim").exists()
