#!/usr/bin/env bash
# Run one pytest tier and print its time. A tier that collects no test fails (pytest's
# exit 5): an empty tier is a broken tier, never a green one.
#   hack/test-tier.sh NAME PATH... [-- PYTEST_ARGS...]
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
name="$1"; shift
paths=(); while [[ $# -gt 0 && "$1" != "--" ]]; do paths+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
python="${PYTHON:-.venv/bin/python}"
start=$(date +%s)
printf '\n==> [%s] tier %s: %s\n' "$(date -u +%H:%M:%S)" "${name}" "${paths[*]}"
"${python}" -m pytest "${paths[@]}" "$@"
rc=$?
elapsed=$(( $(date +%s) - start ))
if [[ ${rc} -eq 5 ]]; then
  printf '==> tier %s FAILED: no tests collected in %s (%ds)\n' "${name}" "${paths[*]}" "${elapsed}"
  exit 1
fi
if [[ ${rc} -ne 0 ]]; then
  printf '==> tier %s FAILED (pytest exit %d) in %ds\n' "${name}" "${rc}" "${elapsed}"
  exit "${rc}"
fi
printf '==> tier %s passed in %ds\n' "${name}" "${elapsed}"
echo "${name} ${elapsed}" >> "${MSERVE_TIER_TIMES:-/dev/null}"
