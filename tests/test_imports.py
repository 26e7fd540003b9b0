"""What the Jetson has: `training.data` and `edge` import without torch (it has none), and
`fod` builds its parser with the argparse of its Python 3.8 (JetPack 5)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def test_data_and_edge_import_with_torch_blocked() -> None:
    code = textwrap.dedent(
        """
        import sys

        class BlockTorch:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError("torch is blocked in this test")
                return None

        sys.meta_path.insert(0, BlockTorch())
        import edge.errors, edge.fsutil, edge.preprocess
        import training.data.augment, training.data.coco, training.data.dataset
        import training.data.importers, training.data.synth, calibration.noise
        import training.data.synth_writer, training.data.preview
        import fod.cli
        fod.cli.build_parser()
        assert "torch" not in sys.modules
        print("ok")
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_blocker_really_blocks() -> None:
    # The test above is only worth something if importing torch under the blocker fails.
    code = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('blocked')\n"
        "sys.meta_path.insert(0, B())\n"
        "import torch\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "blocked" in r.stderr


def test_edge_imports_no_other_stage() -> None:
    """edge/ installs alone on a Jetson: it never imports training, calibration, fod or torch."""
    import ast
    from pathlib import Path

    forbidden = {"training", "calibration", "fod", "torch", "torchvision"}
    root = Path(__file__).resolve().parent.parent / "edge"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in forbidden, f"{path.name} imports {n}"


def test_fod_builds_its_parser_with_the_argparse_of_python_3_8(monkeypatch) -> None:
    """A JetPack 5 unit runs Python 3.8, and `fod` builds every verb's parser at start
    (`fod run` too): nothing in it may need a newer argparse. BooleanOptionalAction (3.9)
    made every `fod` command fail there with an AttributeError."""
    import argparse

    from fod.cli import build_parser

    monkeypatch.delattr(argparse, "BooleanOptionalAction")
    p = build_parser()
    rollout = ["rollout", "--bundle", "b"]
    a = p.parse_args(rollout)
    assert (a.alarm_probe, a.engine) == (True, None)
    a = p.parse_args([*rollout, "--no-alarm-probe", "--engine"])
    assert (a.alarm_probe, a.engine) == (False, True)
    assert p.parse_args([*rollout, "--no-engine"]).engine is False
    train = ["train", "--data", "d", "--val", "v", "--out", "o"]
    assert [p.parse_args([*train, *x]).amp for x in ([], ["--amp"], ["--no-amp"])] == [
        None,
        True,
        False,
    ]
    with pytest.raises(SystemExit):
        p.parse_args([*train, "--amp", "--no-amp"])
