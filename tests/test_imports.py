"""`training.data` and `edge` import without torch: the Jetson has none."""

from __future__ import annotations

import subprocess
import sys
import textwrap


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
