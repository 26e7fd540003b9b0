"""Bad input on the unit: one clear line naming the file or key, exit 2, nothing half-written."""

from __future__ import annotations

import json
import shutil
import socket
import stat
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from gpiozero.pins.mock import MockFactory

from edge.app import check_rollback, line_runtime
from edge.bundle import open_bundle
from edge.config import ConfigError, LineConfig, blind_spots, load_config, parse_config
from edge.errors import FodError
from edge.faults import FAULT_KINDS, Injector, parse_faults
from edge.preflight import FAIL, OK, check_decision
from fod.cli import main

from .test_runtime import _cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"gpio": {"delay_ms": float("inf")}}, r"gpio\.delay_ms must be a finite number"),
        ({"decision": {"score_threshold": float("nan")}}, r"decision\.score_threshold must be a"),
        ({"decision": {"score_threshold": 7.0}}, r"decision\.score_threshold out of range"),
        ({"decision": {"track_threshold": 1.5}}, r"decision\.track_threshold out of range"),
        ({"decision": {"unsure_weight": 1.5}}, r"decision\.unsure_weight out of range"),
        ({"decision": {"wander_straightness": 1.5}}, r"wander_straightness out of range"),
        ({"decision": {"wander_roughness": 2.5}}, r"decision\.wander_roughness out of range"),
        ({"decision": {"class_thresholds": {"fiber": "high"}}}, r"class_thresholds\.fiber must"),
        ({"decision": {"class_thresholds": {"fiber": 1.5}}}, r"class_thresholds\.fiber must"),
        ({"timing": {"queue_depth": 0}}, r"queue_depth must be >= 1"),
        ({"decision": {"match_distance": 0.0}}, r"decision\.match_distance must be > 0 px"),
        ({"decision": {"rising_distance": -6.0}}, r"decision\.rising_distance must not be neg"),
        ({"decision": {"jump_distance": -1.0}}, r"decision\.jump_distance must not be neg"),
        ({"gpio": {"pulse_ms": 0.0}}, r"gpio\.pulse_ms must be in"),
        ({"gpio": {"gate_feedback_ms": 40.0}}, r"gpio\.gate_feedback_ms must be in \(0, gpio"),
        ({"gpio": {"delay_ms": 50.0}}, r"decision_margin_ms must be below gpio\.delay_ms"),
        ({"postprocess": {"nms_pre": 0}}, r"postprocess\.nms_pre must be >= 1"),
        ({"postprocess": {"max_per_image": 0}}, r"postprocess\.max_per_image must be >= 1"),
        ({"model": {"reference_every_s": float("inf")}}, r"model\.reference_every_s must be a"),
        ({"model": {"reference_every_s": -1.0}}, r"model\.reference_every_s must not be neg"),
        ({"audit": {"rotate_bytes": 0}}, r"audit\.rotate_bytes must be at least 1 MiB"),
        ({"model": {"threads": -1}}, r"model\.threads must be an integer >= 0"),
        ({"model": {"threads": "4"}}, r"model\.threads must be an integer >= 0"),
        # A wiring or alarm output spelt another way would drive the gate the wrong way round.
        ({"gpio": {"energise_to": "Accept"}}, r"gpio\.energise_to must be 'reject' or 'accept'"),
        ({"gpio": {"alarm_energise_to": "on"}}, r"gpio\.alarm_energise_to must be one of"),
        ({"gpio": {"ejector_pin": 17}}, r'gpio\.ejector_pin must be a string such as "GPIO17"'),
        ({"gpio": {"delay_ms": -5.0}}, r"gpio\.delay_ms must not be negative"),
        ({"gpio": {"delay_ms": 70000.0}}, r"gpio\.delay_ms must be in \(0, 60000\]"),
        ({"camera": 3}, r"\[camera\] must be a table"),
        ({"camera": {"frames": 0}}, r"camera\.frames must be >= 1"),
        ({"camera": {"frames": 2.5}}, r"camera\.frames must be an integer"),
        ({"camera": {"mono": 1}}, r"camera\.mono must be true or false"),
        # Before, each of these reached int() or OpenCV at the open: a traceback.
        ({"camera": {"source": "v4l2:cam0"}}, r"camera\.source 'v4l2:cam0': expected a device"),
        ({"camera": {"source": "gst:"}}, r"camera\.source 'gst:': names no pipeline"),
        ({"camera": {"source": "file: "}}, r"camera\.source 'file: ': names no file or folder"),
        ({"audit": {"folder": 5}}, r"audit\.folder must be a path string"),
        ({"decision": {"class_thresholds": 0.5}}, r"decision\.class_thresholds must be a table"),
        ({"model": {"dla_core": -2}}, r"model\.dla_core must be -1 \(the GPU\) or a DLA core"),
        ({"model": {"precision": "fp16"}}, r"model\.precision must be one of .* for onnxrun"),
        ({"model": {"int8_kernels": "vnni"}}, r"model\.int8_kernels must be 'auto', 'integer'"),
        ({"model": {"backend": "tflite"}}, r"model\.backend must be 'onnxruntime' or 'tensorrt'"),
        ({"postprocess": {"score_threshold": 0.0}}, r"postprocess thresholds must lie in"),
        ({"metrics": {"port": 70000}}, r"metrics\.port must be 0 \(off\) or a TCP port"),
        ({"metrics": {"address": "localhost"}}, r"metrics\.address must be an IP address"),
    ],
)
def test_config_values_that_break_the_line_are_refused(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "line.toml")


def test_blind_spots_name_what_keeps_every_detection_from_rejecting() -> None:
    assert blind_spots(parse_config({})) == []
    assert blind_spots(parse_config({"camera": {"frames": 2}})) == []  # 2 x 1.5 reaches 3.0
    one_frame = blind_spots(parse_config({"camera": {"frames": 1}}))
    assert len(one_frame) == 1 and "min_evidence 3 is out of reach" in one_frame[0]
    assert "all 1 camera.frames counts 1.5" in one_frame[0]
    assert "counts 0" in blind_spots(parse_config({"decision": {"moving_weight": 0.0}}))[0]
    floor = blind_spots(parse_config({"postprocess": {"score_threshold": 1.0}}))
    assert floor == ["postprocess.score_threshold is 1: the model passes on no detection"]
    # Without unsure tracks, a class whose threshold is 1 never starts a track.
    sure = {"unsure_weight": 0.0}
    shut = blind_spots(parse_config({"decision": {**sure, "class_thresholds": {"fiber": 1.0}}}))
    assert shut == ["decision.class_thresholds.fiber is 1: no track of fiber starts"]
    default = {**sure, "score_threshold": 1.0, "class_thresholds": {"a": 0.5}}
    assert blind_spots(parse_config({"decision": default})) == [
        "decision.score_threshold is 1: no track of any class not in class_thresholds starts"
    ]
    # With the default unsure tracks (from track_threshold 0.3, counting 0.4 x 1.5 x 12 =
    # 7.2 >= 3) a class at threshold 1 still rejects: not blind; with 0.1 x 18 = 1.8 it is.
    assert blind_spots(parse_config({"decision": {"score_threshold": 1.0}})) == []
    faint = {"score_threshold": 1.0, "unsure_weight": 0.1}
    assert len(blind_spots(parse_config({"decision": faint}))) == 1
    check = check_decision(parse_config({"decision": {"min_evidence": 99.0}}))
    assert check.status == FAIL and "min_evidence 99 is out of reach" in check.detail
    ok = check_decision(parse_config({}))
    assert ok.status == OK and "a moving particle rejects from 2 of 12 frames" in ok.detail
    zero = check_decision(parse_config({"decision": {"min_evidence": 0.0, "moving_weight": 0.0}}))
    assert zero.status == OK and "rejects from 1 of 12" in zero.detail  # no division by 0


@pytest.mark.parametrize(
    "toml, why",
    [
        ("[camera]\nframes = 1\n", "decision.min_evidence 3 is out of reach"),
        ("[postprocess]\nscore_threshold = 1.0\n", "postprocess.score_threshold is 1"),
        (
            "[decision]\nscore_threshold = 1.0\nunsure_weight = 0.0\n",
            "decision.score_threshold is 1: no track of any class not in class_thresholds",
        ),
        (
            "[decision]\nunsure_weight = 0.0\n[decision.class_thresholds]\nparticle = 1.0\n",
            "decision.class_thresholds.particle is 1: no track of particle starts",
        ),
        ("[decision]\nmin_size = 5000.0\n", "decision.min_size is 5000 px in 320x256 frames"),
    ],
    ids=["min_evidence", "postprocess", "score_threshold", "class_threshold", "min_size"],
)
def test_fod_run_refuses_a_line_that_could_only_pass_containers(
    bundle: Path, tmp_path: Path, capsys, toml: str, why: str
) -> None:
    """Configs under which no detection could ever reject (one camera frame with the
    default min_evidence of two moving sightings; nothing passed by postprocess; a
    threshold of 1 with no unsure tracks; boxes that could never be min_size): every
    container the faults spare would pass. `fod run` refuses each before the pins or the
    audit are touched."""
    cam = tmp_path / "cam"  # a camera that opens: the min_size check needs the model
    cam.mkdir()
    cv2.imwrite(str(cam / "0.png"), np.full((256, 320, 3), 128, np.uint8))
    cfg = tmp_path / "line.toml"
    cfg.write_text(
        f'[model]\nbundle = "{bundle}"\nallow_unsigned = true\n'
        f'[audit]\nfolder = "{tmp_path / "audit"}"\n'
        f'[gpio]\npin_factory = "mock"\ntrigger_pin = "GPIO22"\n{toml}'
        + ("" if "[camera]" in toml else "[camera]\n")
        + f'source = "file:{cam}"\n'
    )
    assert main(["run", "--config", str(cfg), "--allow-mock-pins"]) == 2
    err = capsys.readouterr().err
    assert why in err
    assert not (tmp_path / "audit").exists()


def test_unknown_class_threshold_is_refused(bundle: Path, tmp_path: Path) -> None:
    cfg = _cfg(bundle, tmp_path, decision={"class_thresholds": {"fibre": 0.4}})
    with pytest.raises(ConfigError, match=r"unknown class\(es\) \['fibre'\]"), line_runtime(
        cfg, MockFactory()
    ):
        pass


def test_broken_bundles_name_the_problem(bundle: Path, tmp_path: Path) -> None:
    not_tar = tmp_path / "b.tar.gz"
    not_tar.write_bytes(b"not a tarball at all")
    with pytest.raises(FodError, match="not a readable bundle tarball"), open_bundle(not_tar):
        pass
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tf:
        for p in sorted(bundle.iterdir()):
            tf.add(p, arcname=f"bundle/{p.name}")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(FodError, match="not a readable bundle tarball"), open_bundle(cut):
        pass
    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy)
    man = json.loads((copy / "manifest.json").read_text())
    name = next(iter(man["files"]))
    del man["files"][name]["sha256"]
    (copy / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(FodError, match=f"entry '{name}' has no sha256"), open_bundle(copy):
        pass


def test_busy_metrics_port_leaves_nothing_behind(bundle: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        cfg = _cfg(bundle, tmp_path, metrics={"port": s.getsockname()[1]})
        with pytest.raises(FodError, match="cannot listen"), line_runtime(cfg, MockFactory()):
            pass
    assert not (tmp_path / "audit").exists()


def test_rollback_is_refused_unless_asked(tmp_path: Path) -> None:
    check_rollback({"name": "line", "version": "2026.11.30"}, tmp_path, False)
    with pytest.raises(FodError, match=r"older than 2026\.11\.30.*--allow-rollback"):
        check_rollback({"name": "line", "version": "2026.11.9"}, tmp_path, False)
    check_rollback({"name": "line", "version": "2026.11.9"}, tmp_path, True)  # on purpose
    check_rollback({"name": "line", "version": "2026.11.10"}, tmp_path, False)  # newer: fine


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--rate", "nan"], "--rate: expected a finite number > 0, got 'nan'"),
        (["run", "--rate", "-60"], "--rate: expected a finite number > 0, got '-60'"),
        (["run", "--rate", "0"], "--rate: expected a finite number > 0, got '0'"),
        (["rollout", "--bundle", "b", "--settle", "nan"], "--settle: expected a finite number"),
        (["rollout", "--bundle", "b", "--settle", "inf"], "--settle: expected a finite number"),
    ],
)
def test_numbers_that_would_storm_or_hang_are_refused(argv, message, tmp_path, capsys) -> None:
    """A timer rate that is not a positive number gave `fod run` a period that never
    waits (a storm of triggers); a NaN or infinite settle time, a rollout whose health
    probe never ends. Refused before any file is read."""
    with pytest.raises(SystemExit) as e:
        main([*argv, "--config", str(tmp_path / "none.toml")])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_simulate_refuses_bad_overrides_and_reused_output(
    bundle: Path, small_set: Path, tmp_path: Path, capsys
) -> None:
    base = ["simulate", "--bundle", str(bundle), "--sequences", str(small_set)]
    assert main([*base, "--delay-ms", "nan", "--out", str(tmp_path / "a")]) == 2
    assert "--delay-ms must be in" in capsys.readouterr().err
    out = tmp_path / "b"
    (out / "audit").mkdir(parents=True)
    assert main([*base, "--out", str(out)]) == 2
    assert "pass a new --out, or --append" in capsys.readouterr().err


def test_keygen_private_key_is_0600_from_the_start(tmp_path: Path, capsys) -> None:
    from edge.signing import generate_keypair

    key, _ = generate_keypair(tmp_path)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY")
    assert main(["keygen", "--out", str(tmp_path / "unit"), "--name", "audit"]) == 0
    assert stat.S_IMODE((tmp_path / "unit" / "audit.key").stat().st_mode) == 0o600
    assert (tmp_path / "unit" / "audit.pub").is_file()
    assert main(["keygen", "--out", str(tmp_path), "--name", "../escaped"]) == 2
    assert "a key pair's name is a plain file name" in capsys.readouterr().err
    assert not (tmp_path.parent / "escaped.key").exists()


def test_keygen_names_a_folder_it_cannot_make_and_leaves_no_lone_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import errno
    import os

    import edge.signing

    (tmp_path / "keys").write_text("a file, not a folder")
    assert main(["keygen", "--out", str(tmp_path / "keys")]) == 2
    assert "keys: cannot make the key folder: File exists" in capsys.readouterr().err

    def full(path: Path, data: bytes) -> None:  # the disk fills between the two halves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(edge.signing, "atomic_write_bytes", full)
    assert main(["keygen", "--out", str(tmp_path / "k2")]) == 2
    assert "k2: cannot write the key pair: No space left on device" in capsys.readouterr().err
    assert list((tmp_path / "k2").iterdir()) == []  # a key without its .pub would block a retry
    monkeypatch.undo()
    assert main(["keygen", "--out", str(tmp_path / "k2")]) == 0


def test_import_refuses_a_nan_bbox(tmp_path: Path, small_set: Path, capsys) -> None:
    src = tmp_path / "src"
    shutil.copytree(small_set, src, ignore=shutil.ignore_patterns("sequences*"))
    data = json.loads((src / "annotations.json").read_text())
    data["annotations"][0]["bbox"][2] = float("nan")
    (src / "annotations.json").write_text(json.dumps(data))
    assert main(["import", "coco", str(src), "--out", str(tmp_path / "out")]) == 2
    assert "non-finite" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fault_specs_are_checked_and_all_leaves_the_machine_out() -> None:
    got = parse_faults("all=0.25")
    assert set(got) == set(FAULT_KINDS) and not {"relay_welded", "gpio_hang", "blind"} & set(got)
    assert parse_faults("relay_welded=1,nan=0") == {"relay_welded": 1.0, "nan": 0.0}
    assert parse_faults("blind=0.5,gpio_hang=0.1") == {"blind": 0.5, "gpio_hang": 0.1}
    for spec, message in [
        ("relay=0.1", "unknown fault 'relay'; choose from all, camera_drop"),
        ("nan=x", "nan needs a probability"),
        ("nan=1.5", "is not a probability"),
    ]:
        with pytest.raises(FodError, match=message):
            parse_faults(spec)


def test_per_call_faults_do_not_depend_on_the_threads_interleaving() -> None:
    """Triggers draw per container in one thread, the gate output and SQLite per call in
    others: a different interleaving must not change which container gets which fault."""
    faults = {"camera_drop": 0.5, "gpio_error": 0.5, "audit_error": 0.5}
    a, b = Injector(faults, 3), Injector(faults, 3)
    calls_a, calls_b = [], []
    for i in range(40):
        a.draw(f"c{i}")
        calls_a.append(a.chance("gpio_error"))
    for i in range(40):
        b.draw(f"c{i}")
    calls_b = [b.chance("gpio_error") for _ in range(40)]
    assert b.active == a.active and calls_b == calls_a
    assert 5 < sum(calls_a) < 35 and 5 < sum(f["camera_drop"] for f in a.active.values()) < 35


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    p = tmp_path / "line.toml"
    p.write_text("[gpio]\ndelay_ms = 'soon'\n")
    with pytest.raises(ConfigError, match=r"line\.toml: gpio\.delay_ms must be a number"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"unknown key camera\.fps"):
        parse_config({"camera": {"fps": 30}}, "x.toml")
    with pytest.raises(ConfigError, match="unknown section"):
        parse_config({"cameras": {}}, "x.toml")
    with pytest.raises(ConfigError, match=r"decision_margin_ms must be below gpio\.delay_ms"):
        parse_config({"gpio": {"delay_ms": 50.0}}, "x.toml")
    example = Path(__file__).resolve().parent.parent / "edge" / "line.example.toml"
    assert load_config(example) == LineConfig()  # the commented example is the defaults
