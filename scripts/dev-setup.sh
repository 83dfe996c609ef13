#!/usr/bin/env bash
# Set up a development environment in .venv: the package with every extra, the development
# toolchain at the exact versions of constraints-dev.txt (so every machine lints, type-checks,
# builds the docs and tests with the same tools), and the browser the web-explorer test drives
# (Debian's chromium, when apt-get is available and we are root).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints-dev.txt -e ".[all]"
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  else
    echo "note: chromium not found; the browser test will be skipped" >&2
  fi
fi
