#!/usr/bin/env bash
# mypy on edge/ as JetPack 5's Python 3.8 sees it, with TensorRT's API from tensorrt-stubs.
# The stubs are installed with --no-deps (they declare the real wheel, which only NVIDIA's
# index and JetPack provide); their .pyi files sit in site-packages without a py.typed
# marker, so mypy is pointed at a copy through MYPYPATH instead. The copy fixes what in
# the stubs is not valid Python (every release from 10.8 to 10.13): add_scale_nd's
# required argument after defaulted ones, and plugin methods with a parameter named `in`.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for pkg in tensorrt tensorrt_bindings; do
  if [[ ! -f "$site/$pkg/__init__.pyi" ]]; then
    echo "tools/mypy_edge.sh: $pkg stubs missing: pip install --no-deps tensorrt-stubs" >&2
    exit 2
  fi
done
stubs=$(mktemp -d)
trap 'rm -rf "$stubs"' EXIT
cp -r "$site/tensorrt" "$site/tensorrt_bindings" "$stubs/"
sed -i -E -e 's/power: Weights = None, channel_axis: int\)/power: Weights = None, channel_axis: int = ...)/' \
  -e 's/([(,] *)in: /\1in_: /g' -e 's/: \.\.\.([,)])/: object\1/g' "$stubs/tensorrt_bindings/tensorrt.pyi"
MYPYPATH="$stubs" "$py" -m mypy --python-version 3.8 --ignore-missing-imports edge
