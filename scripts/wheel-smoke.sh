#!/usr/bin/env bash
# Build the sdist and the wheel, install the wheel into a fresh virtual environment and run it from
# there: this catches package data that only an editable install sees (the shipped models, assets).
# The fresh environment takes vlexplain from the wheel alone (no editable finder, run outside the
# source tree); its third-party dependencies are borrowed from .venv through a path file, so that
# the check does not copy several GB of torch again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
rm -rf dist
"$PY" -m build --sdist --wheel --outdir dist . >/tmp/vlexplain-build.log 2>&1 || { tail -20 /tmp/vlexplain-build.log; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
deps=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
fresh=$("$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$deps" > "$fresh/_vlexplain_deps.pth"
"$tmp/venv/bin/python" -m pip install -q --no-deps --no-index dist/*.whl
img=$("$PY" -c 'import os, skimage.data; print(os.path.join(os.path.dirname(skimage.data.__file__), "chelsea.png"))')
cd "$tmp"
"$tmp/venv/bin/python" - "$tmp" <<'PY'
import sys, vlexplain
assert vlexplain.__file__.startswith(sys.argv[1]), f"vlexplain came from {vlexplain.__file__}, not the wheel"
print(f"vlexplain {vlexplain.__version__} from the wheel: {vlexplain.__file__}")
PY
"$tmp/venv/bin/vlexplain" models >/dev/null
"$tmp/venv/bin/vlexplain" explain "$img" -t "a cat" --model testbed:shapes --method gradcam --out "$tmp/out-shapes" >/dev/null
"$tmp/venv/bin/vlexplain" explain "$img" -t "a cat" --model offline --method saliency --out "$tmp/out" >/dev/null
test -s "$tmp/out/index.html"
echo "wheel smoke test passed: $(ls "$OLDPWD"/dist)"
