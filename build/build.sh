#!/usr/bin/env bash
# Build the one-folder application dist/inspector/ (run from anywhere; uses the checkout's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m PyInstaller --noconfirm --log-level WARN --workpath build/work --distpath dist build/inspector.spec
echo "built dist/inspector ($(du -sh dist/inspector | cut -f1))"
