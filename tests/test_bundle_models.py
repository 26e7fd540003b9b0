"""A bundle holds one model: its FP32 and INT8 files are one export of one checkpoint, and
the report whose metrics the manifest carries measured exactly those files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from edge.backends.select import read_verified
from edge.bundle import create_bundle, open_bundle
from edge.errors import FodError
from edge.fsutil import sha256_file
from edge.model_info import read_model_info
from fod.cli import main

from .filepin import child_env, levels


def _export(ckpt: Path, out: Path, *extra: str) -> Path:
    assert main(["export", "--weights", str(ckpt), "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module")
def others(exported, tmp_path_factory: pytest.TempPathFactory):
    """`exported`'s checkpoint at another size and as mono, and another checkpoint (the same
    weights saved again, as a retrained model would be) at the same size and layout."""
    root = tmp_path_factory.mktemp("others")
    ckpt = exported[2]
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    state["epoch"] = 99
    torch.save(state, root / "retrained.pt")
    return {
        "size": _export(ckpt, root / "small.onnx", "--size", "256x192"),
        "mono": _export(ckpt, root / "mono.onnx", "--size", "320x256", "--mono"),
        "checkpoint": _export(root / "retrained.pt", root / "re.onnx", "--size", "320x256"),
    }


def _make(out: Path, **files: Path) -> int:
    argv = ["bundle", "make", "--out", str(out)]
    for flag, path in files.items():
        argv += [f"--{flag.replace('_', '-')}", str(path)]
    return main(argv)


def test_the_report_names_what_it_measured(exported, calibrated: Path) -> None:
    cal = json.loads((calibrated / "report.json").read_text())["calibration"]
    assert cal["source_checkpoint_sha256"] == read_model_info(exported[3]).checkpoint_sha256
    assert cal["sha256"] == {
        "int8": sha256_file(calibrated / "model.int8.onnx"),
        "int8_cpu": sha256_file(calibrated / "model.int8-cpu.onnx"),
        "cache": sha256_file(calibrated / "calib.cache"),
    }


def test_bundle_make_refuses_files_of_another_model(
    exported, calibrated: Path, others, tmp_path: Path, capsys
) -> None:
    int8, cpu = calibrated / "model.int8.onnx", calibrated / "model.int8-cpu.onnx"
    report = calibrated / "report.json"
    cases = [
        ({"onnx": others["size"], "int8": int8}, "input_size [320, 256] where"),
        ({"onnx": others["mono"], "int8_cpu": cpu}, "input_layout 'uint8_nhwc' where"),
        ({"onnx": others["checkpoint"], "int8": int8}, "source_checkpoint_sha256 '"),
        ({"onnx": others["checkpoint"], "report": report}, "measured a model of checkpoint"),
    ]
    stale = tmp_path / "calib.cache"  # a cache of another calibration run
    stale.write_text((calibrated / "calib.cache").read_text().replace(": 3", ": 4", 1))
    cases.append(({"onnx": exported[3], "int8": int8, "cache": stale, "report": report},
                  "not the cache file"))  # fmt: skip
    for k, (files, why) in enumerate(cases):
        out = tmp_path / f"b{k}"
        assert _make(out, **files) == 2, files
        err = capsys.readouterr().err
        assert why in err, (files, err)
        assert not out.exists()
    for k, text in enumerate(("[1]", '{"metrics": {}, "calibration": "x"}', "{")):
        bad = tmp_path / f"bad{k}.json"  # not a report: named, never a traceback
        bad.write_text(text)
        assert _make(tmp_path / f"r{k}", onnx=exported[3], report=bad) == 2
        assert f"{bad}: not a calibration report" in capsys.readouterr().err
    # The files of one run, with the FP32 they came from: a bundle.
    ok = {"onnx": exported[3], "int8": int8, "int8_cpu": cpu, "report": report}
    assert _make(tmp_path / "ok", **ok, cache=calibrated / "calib.cache") == 0
    with open_bundle(tmp_path / "ok") as b:
        assert b.manifest["input_layout"] == "uint8_nhwc"
    # A report from before reports named their files is taken, and said to be.
    old = json.loads(report.read_text())
    del old["calibration"]["sha256"], old["calibration"]["source_checkpoint_sha256"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert _make(tmp_path / "old", onnx=exported[3], int8=int8, report=tmp_path / "old.json") == 0
    assert "names no model it measured (an older report)" in capsys.readouterr().err


def test_the_unit_refuses_a_model_its_manifest_does_not_describe(
    exported, others, tmp_path: Path, capsys
) -> None:
    """A bundle an older `fod bundle make` wrote with an FP32 of one size and an INT8 of
    another: the model's reader (every verb's, `fod engine`'s too) refuses it, naming the
    field; its FP32 still opens."""
    ok = tmp_path / "ok"
    assert _make(ok, onnx=exported[3]) == 0
    with open_bundle(ok) as b:
        meta = {k: v for k, v in b.manifest.items() if k not in ("format", "files")}
    del meta["input_layout"]  # older manifests lack it
    mixed = tmp_path / "mixed"
    shutil.copyfile(others["size"], tmp_path / "model.int8-cpu.onnx")
    files = {"fp32": exported[3], "int8_cpu": tmp_path / "model.int8-cpu.onnx"}
    create_bundle(mixed, files, meta)
    assert main(["bench", "--bundle", str(mixed), "--precision", "fp32", "--iters", "1"]) == 0
    capsys.readouterr()
    assert main(["bench", "--bundle", str(mixed), "--precision", "int8", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert "model.int8-cpu.onnx: not the model its bundle's manifest describes" in err
    assert "input_size [256, 192] where the manifest has [320, 256]" in err
    with open_bundle(mixed) as b, pytest.raises(FodError, match=r"input_size \[256, 192\]"):
        read_verified(b, b.file("int8_cpu"))


def test_fod_run_on_a_mixed_bundle_never_drives_an_output(exported, others, tmp_path: Path) -> None:
    """`fod run` (its own process, pins that outlive it) on a bundle whose INT8-CPU model is
    not its manifest's: exit 2 naming the field before the line runs. At the pins: the gate
    never energised and the ready output never on, so a PLC sees no unit ready."""
    meta = {"classes": ["fiber", "particle", "glass_flake"], "input_size": [320, 256],
            "level_counts": read_model_info(exported[3]).level_counts}  # fmt: skip
    shutil.copyfile(others["size"], tmp_path / "model.int8-cpu.onnx")
    mixed = create_bundle(tmp_path / "mixed", {"int8_cpu": tmp_path / "model.int8-cpu.onnx"}, meta)
    cam = tmp_path / "cam"
    cam.mkdir()
    cv2.imwrite(str(cam / "0.png"), np.full((256, 320, 3), 128, np.uint8))
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[camera]\nsource = "file:{cam}"\n[model]\nbundle = "{mixed}"\nallow_unsigned = true\n'
        '[gpio]\npin_factory = "mock"\nalarm_energise_to = "ready"\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\nmin_free_bytes = 0\n[metrics]\nport = 0\n'
    )
    pins = tmp_path / "pins"
    cmd = [sys.executable, "-m", "fod", "run", "--config", str(cfg), "--allow-mock-pins",
           "--rate", "60", "--max-containers", "1"]  # fmt: skip
    env = child_env(tmp_path / "site", pins)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "input_size [256, 192] where the manifest has [320, 256]" in r.stderr
    for name in ("GPIO17", "GPIO27"):  # the gate, the ready output
        assert not any(on for _, on in levels(pins, name)), (name, levels(pins, name))
    assert not (tmp_path / "audit").exists()  # no container decided


def test_a_model_swapped_after_its_bundle_was_verified_is_refused(exported, tmp_path: Path) -> None:
    """The model file replaced between the bundle's check and the load (another process
    writing the bundle folder): what is loaded is hashed again, and refused."""
    b_dir = tmp_path / "b"
    assert _make(b_dir, onnx=exported[3]) == 0
    with open_bundle(b_dir) as b:
        model = b.file("fp32")
        model.write_bytes(model.read_bytes() + b"\0")
        with pytest.raises(FodError, match="changed after the bundle was verified"):
            read_verified(b, model)


@pytest.mark.parametrize("member", ["bundle/../evil.onnx", "evil.onnx", "link", "garbage"])
def test_a_bundle_tarball_with_a_member_outside_its_folder_is_refused(
    tmp_path: Path, member: str
) -> None:
    """Only regular files directly under `bundle/` are taken from a tarball: a path that
    climbs out, a file beside the folder or a link is refused before anything is used, and
    a file that is no tarball says so."""
    path = tmp_path / "b.tar.gz"
    if member == "garbage":
        path.write_bytes(b"not a tarball")
        message = "not a readable bundle tarball"
    else:
        with tarfile.open(path, "w:gz") as tf:
            info = tarfile.TarInfo(member if member != "link" else "bundle/model.onnx")
            if member == "link":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tf.addfile(info)
            else:
                info.size = 4
                tf.addfile(info, io.BytesIO(b"evil"))
        message = "unexpected member"
    with pytest.raises(FodError, match=message), open_bundle(path):
        pass
    assert not (tmp_path / "evil.onnx").exists()
