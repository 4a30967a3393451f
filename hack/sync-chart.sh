#!/usr/bin/env bash
# Copy the one source of the CRD and the operator's RBAC rules (crds/) into the chart.
# Helm reads only files inside a chart, so the chart carries copies; tests/unit/test_chart_sync.py
# fails when they drift. Run after changing anything in crds/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p charts/mserve/crds charts/mserve/files
rm -f charts/mserve/crds/*.yaml
for f in crds/*.yaml; do
  if grep -q '^kind: CustomResourceDefinition' "${f}"; then
    cp "${f}" charts/mserve/crds/
  else
    cp "${f}" charts/mserve/files/
  fi
  echo "copied ${f}"
done
