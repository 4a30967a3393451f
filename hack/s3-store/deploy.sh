#!/usr/bin/env bash
# The local artifact store (MinIO) in mserve-system: the root Secret (random keys, made once and
# kept), the Deployment and Service of s3-store.yaml, waited for. Idempotent.
#   KUBECTL=... KUBECONFIG=... hack/s3-store/deploy.sh
# Namespaces get their own keys from hack/store-tenant.py; the root keys stay in mserve-system.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
KUBECTL="${KUBECTL:-kubectl}"
NS=mserve-system
"${KUBECTL}" get namespace "${NS}" >/dev/null 2>&1 || "${KUBECTL}" create namespace "${NS}"
if ! "${KUBECTL}" -n "${NS}" get secret mserve-s3-root >/dev/null 2>&1; then
  "${KUBECTL}" -n "${NS}" create secret generic mserve-s3-root --from-literal=MINIO_ROOT_USER=mserve-admin \
    --from-literal=MINIO_ROOT_PASSWORD="$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')" >/dev/null
  echo "created Secret ${NS}/mserve-s3-root (the store's root keys)"
fi
"${KUBECTL}" apply -f s3-store.yaml
"${KUBECTL}" -n "${NS}" rollout status deployment/mserve-s3 --timeout=180s
