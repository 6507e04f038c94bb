#!/usr/bin/env bash
# Creates .venv and installs logad with its Python dependencies. Idempotent: does nothing when the
# venv was already built from the current pyproject.toml.
# torch comes from a local CPU wheel when pip's find-links has one (PIP_FIND_LINKS or pip config),
# else from the package index (on Linux x86_64 that build also runs on CPU and uses CUDA when present).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ -f "$stamp" ]; then exit 0; fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python >= 3.11 is needed (found $($PYTHON --version))" >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip="$VENV/bin/python -m pip"
links="${PIP_FIND_LINKS:-} $($pip config get global.find-links 2>/dev/null || true)"
torch_wheel=""
for d in $links; do
  d=${d#file://}
  for w in "$d"/torch-*.whl; do [ -f "$w" ] && torch_wheel="$w"; done
done
if [ -n "$torch_wheel" ]; then
  echo "installing torch from the local wheel $torch_wheel"
  $pip install -q "$torch_wheel"
fi
echo "installing logad and its dependencies into $VENV (first time: a few minutes)"
$pip install -q -e '.[test]'
rm -f "$VENV"/.installed-*
touch "$stamp"
