#!/usr/bin/env bash
# Refresh .ci/constraints.txt: the exact versions the test command installs (CPython 3.11,
# x86_64). pyproject.toml keeps ranges, so a release upstream (a linter with new rules, a
# runtime with new behaviour) would otherwise change what CI tests without a commit here.
#
#   tools/lock_ci.sh      # a fresh venv from the ranges alone, frozen; then run the tests
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)
trap 'rm -rf "$venv" .ci/constraints.txt.tmp' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e '.[train,edge,dev]'
"$venv/bin/pip" install -q --no-deps tensorrt-stubs==10.13.0.35.1
{
  echo "# Written by tools/lock_ci.sh: every package the test command installs, at the version"
  echo "# the suite passed with ($("$venv/bin/python" -V), $(uname -m)). Ranges: pyproject.toml."
  "$venv/bin/pip" freeze --exclude-editable
} > .ci/constraints.txt.tmp
mv .ci/constraints.txt.tmp .ci/constraints.txt
echo "tools/lock_ci.sh: .ci/constraints.txt: $(grep -c '==' .ci/constraints.txt) pins"
