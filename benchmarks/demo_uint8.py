"""A float-input bundle's model with the uint8 input, for `fod bench` float-vs-uint8 comparisons.

    python benchmarks/demo_uint8.py OUT --bundle FLOAT_BUNDLE

Writes OUT/rgb (images uint8 [N, H, W, 3]) and OUT/mono (grey [N, H, W]): the same Q/DQ
graph, weights and metadata, its input rewritten by `training.onnx_input.uint8_input` (the
rewrite `fod export --input uint8` applies), bundled unsigned. The shipped demo already
takes uint8 grey frames: give it a bundle exported without `--input uint8`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnx

from edge.bundle import create_bundle, model_fields, open_bundle
from edge.errors import FodError
from edge.model_info import read_model_info
from training.onnx_input import uint8_input


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--bundle", type=Path, default=Path("models/demo"))
    args = p.parse_args()
    try:
        convert(args.bundle, args.out)
    except FodError as e:
        print(f"demo_uint8: {args.bundle}: {e}", file=sys.stderr)
        return 1
    return 0


def convert(bundle: Path, out_root: Path) -> None:
    with open_bundle(bundle) as b, tempfile.TemporaryDirectory() as work:
        roles = [(e["role"], name) for name, e in b.manifest["files"].items()]
        for variant, mono in (("rgb", False), ("mono", True)):
            files = {}
            for role, name in roles:
                src = b.root / name
                if name.endswith(".onnx"):
                    dst = Path(work) / variant / name
                    dst.parent.mkdir(exist_ok=True)
                    onnx.save(uint8_input(onnx.load(str(src)), mono), str(dst))
                    src = dst
                files[role] = src
            meta = {k: v for k, v in b.manifest.items() if k not in ("format", "files")}
            models = [p for p in files.values() if p.suffix == ".onnx"]
            meta.update(model_fields(read_model_info(models[0])))  # its new input layout
            meta["name"] = f"{b.manifest.get('name', 'demo')}-uint8-{variant}"
            out = create_bundle(out_root / variant, files, meta)
            print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
