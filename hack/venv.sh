#!/usr/bin/env bash
# Create (once) and update the project's virtual environment outside the clone, so that
# CI runs and later sessions on the same machine reuse it; link it as ./.venv.
# Usage: hack/venv.sh [EXTRAS]   (default extras: dev)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
cache="${MSERVE_CACHE:-$HOME/.cache/mserve}"
# MSERVE_VENV puts a second checkout's environment elsewhere (an editable install points
# at exactly one checkout).
venv="${MSERVE_VENV:-$cache/venv-py$(python3 -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')}"
start=$(date +%s)
if [[ ! -x "$venv/bin/python" ]]; then
  echo "==> creating virtual environment $venv"
  mkdir -p "$cache"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
fi
echo "==> installing mserve[$extras] into $venv"
"$venv/bin/python" -m pip install -q --progress-bar off -e ".[$extras]"
ln -sfn "$venv" .venv
echo "==> environment ready in $(( $(date +%s) - start ))s: $venv"
