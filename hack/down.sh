#!/usr/bin/env bash
# `make down`: remove what `make up` made. ModelServices first (the operator removes their
# children and finalizers), then the chart, the S3 store and the CRDs; stop this machine's
# cluster too when `make up` started it (MSERVE_KEEP_CLUSTER=1 keeps it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/layout.sh
source hack/cluster/layout.sh
export MSERVE_CACHE
UP_STATE="${MSERVE_CACHE}/up"
NS="${MSERVE_NAMESPACE:-mserve-system}"
APP_NS="${MSERVE_APP_NAMESPACE:-default}"
cluster="$(cat "${UP_STATE}/cluster" 2>/dev/null || echo none)"

if [[ -z "${KUBECONFIG:-}" ]]; then
  use_cluster_kubectl
  if ! kubectl --request-timeout=3s get --raw /readyz >/dev/null 2>&1; then
    echo "no cluster running: nothing to remove"; rm -f "${UP_STATE}/cluster"; exit 0
  fi
fi
HELM="$(make --no-print-directory -s print-helm)"

echo "==> deleting ModelServices (the operator removes their Jobs, Deployments, Services, HPAs)"
if kubectl get crd modelservices.mserve.io >/dev/null 2>&1; then
  kubectl delete msvc --all -A --wait --timeout=120s || true
fi
echo "==> helm uninstall mserve"
"${HELM}" uninstall mserve -n "${NS}" --wait --timeout 2m 2>/dev/null || echo "   (not installed)"
echo "==> S3 store, credentials, namespace"
kubectl delete -f hack/s3-store/s3-store.yaml --ignore-not-found --wait --timeout=60s
kubectl -n "${APP_NS}" delete secret s3-creds mserve-store --ignore-not-found
kubectl -n mserve-system delete secret mserve-s3-root --ignore-not-found
kubectl delete namespace "${NS}" --ignore-not-found --wait --timeout=120s
echo "==> CRDs (helm keeps them on uninstall; make down removes them)"
kubectl delete -f charts/mserve/crds/ --ignore-not-found --wait --timeout=60s

if [[ "${cluster}" == "started-by-up" && "${MSERVE_KEEP_CLUSTER:-0}" != "1" ]]; then
  echo "==> stopping this machine's cluster (make up started it)"
  bash hack/cluster.sh down
fi
rm -f "${UP_STATE}/cluster"
echo "==> down"
