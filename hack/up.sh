#!/usr/bin/env bash
# `make up`: the whole mserve story on a cluster, ending with a real inference.
#
#   1. a cluster: the one in $KUBECONFIG, else this machine's (hack/cluster.sh up)
#   2. images: runtime, optimizer, operator and the S3 store, built and loaded
#   3. the artifact store in the cluster (MinIO, hack/s3-store/), the app namespace's own keys
#   4. the Helm chart, pointed at that store
#   5. the digits model trained here (examples/digits/train.py) and uploaded
#   6. examples/digits.yaml applied; progress printed until Ready
#   7. kubectl get msvc, the optimization summary, a curl inference and its answer
#
# Everything is idempotent: a second `make up` reuses the cluster, the images (Docker's
# layer cache) and the trained model, and takes a fraction of the first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/layout.sh
source hack/cluster/layout.sh
export MSERVE_CACHE
PYTHON="${PYTHON:-.venv/bin/python}"
UP_STATE="${MSERVE_CACHE}/up"
OUT="out/up"
NS="${MSERVE_NAMESPACE:-mserve-system}"
APP_NS="${MSERVE_APP_NAMESPACE:-default}"
RELEASE=mserve
READY_TIMEOUT="${MSERVE_READY_TIMEOUT:-900}"
mkdir -p "${UP_STATE}" "${OUT}"
T0=${SECONDS}

step() { printf '\n==> [%4ds] %s\n' "$((SECONDS - T0))" "$*"; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------------ 1. the cluster
step "cluster"
if [[ -n "${KUBECONFIG:-}" ]]; then
  echo "using the cluster in KUBECONFIG=${KUBECONFIG} (context $(kubectl config current-context))"
  kubectl version >/dev/null || die "the cluster in KUBECONFIG does not answer"
  echo "external" > "${UP_STATE}/cluster"
else
  use_cluster_kubectl
  if ! kubectl --request-timeout=3s get --raw /readyz >/dev/null 2>&1; then
    echo "started-by-up" > "${UP_STATE}/cluster"
  fi
  bash hack/cluster.sh up
  [[ -f "${UP_STATE}/cluster" ]] || echo "already-running" > "${UP_STATE}/cluster"
fi
export KUBECONFIG
make --no-print-directory helm >/dev/null
HELM="$(make --no-print-directory -s print-helm)"

# ------------------------------------------------------------------ 2. images
step "images: build (Docker's layer cache makes a rebuild quick) and load (log: ${OUT}/images.log)"
bash hack/mserve-images.sh build >"${OUT}/images.log" 2>&1 || { tail -n 40 "${OUT}/images.log"; die "image build failed"; }
bash hack/mserve-images.sh load 2>&1 | sed 's/^/    /'
bash hack/mserve-images.sh sizes

# ------------------------------------------------------------------ 3. the store
step "artifact store (MinIO, enforces keys) in namespace mserve-system; keys for ${APP_NS}"
bash hack/s3-store/deploy.sh
S3_ENDPOINT="http://mserve-s3.mserve-system.svc:9000"
port="$("${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
kubectl -n mserve-system port-forward svc/mserve-s3 "${port}:9000" >"${OUT}/port-forward.log" 2>&1 &
forward=$!
trap 'kill ${forward} 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/${port}") 2>/dev/null && break; sleep 0.2; done
export MSERVE_STORE_ENDPOINT="http://127.0.0.1:${port}"
# The namespace's own keys (Secret mserve-store): read/write s3://mserve-artifacts/${APP_NS}/ only.
"${PYTHON}" hack/store-tenant.py "${APP_NS}"
# Read-only keys for the model's source (Secret s3-creds, as examples/digits.yaml names it).
"${PYTHON}" hack/store-tenant.py "${APP_NS}" --secret s3-creds --read-only --read s3://models/digits/

# ------------------------------------------------------------------ 4. the chart
step "helm upgrade --install ${RELEASE} charts/mserve -n ${NS}"
# --take-ownership adopts same-named objects that tests/integration leaves on this cluster.
"${HELM}" upgrade --install "${RELEASE}" charts/mserve -n "${NS}" --wait --timeout 5m --take-ownership \
  --set artifactStore.uri=s3://mserve-artifacts/ \
  --set artifactStore.s3.endpoint="${S3_ENDPOINT}" \
  --set artifactStore.s3.credentialsSecret=mserve-store \
  --set-string "operator.podAnnotations.mserve\.io/image-id=$(docker image inspect -f '{{.Id}}' mserve-operator:"$(awk -F'"' '/^appVersion:/ { print $2 }' charts/mserve/Chart.yaml)" | cut -c8-19)"
kubectl -n "${NS}" rollout status deployment/"${RELEASE}-operator" --timeout=180s

# ------------------------------------------------------------------ 5. the model
step "digits model: train (cached in ${OUT}) and upload"
[[ -f "${OUT}/model.pt2" ]] || "${PYTHON}" examples/digits/train.py --out "${OUT}"
MODEL_URI="$(awk '/uri:/ { print $2; exit }' examples/digits.yaml)"
MODEL_FILE="${OUT}/$(basename "${MODEL_URI}")"
[[ -f "${MODEL_FILE}" ]] || die "examples/digits.yaml wants ${MODEL_URI}; train.py wrote no ${MODEL_FILE}"
# The admin uploads with the store's root keys; tenants' keys cannot write to models/.
root() { kubectl -n mserve-system get secret mserve-s3-root -o "jsonpath={.data.$1}" | base64 -d; }
AWS_ACCESS_KEY_ID="$(root MINIO_ROOT_USER)" AWS_SECRET_ACCESS_KEY="$(root MINIO_ROOT_PASSWORD)" \
  "${PYTHON}" hack/s3-store/upload.py "${MODEL_FILE}" "${MODEL_URI}" --endpoint "${MSERVE_STORE_ENDPOINT}"
kill "${forward}" 2>/dev/null || true

# ------------------------------------------------------------------ 6. the ModelService
step "kubectl apply -f examples/digits.yaml (namespace ${APP_NS})"
NAME="$(awk '/^  name:/ { print $2; exit }' examples/digits.yaml)"
# A Failed verdict is final for its spec: start over rather than wait on it.
if [[ "$(kubectl -n "${APP_NS}" get msvc "${NAME}" -o jsonpath='{.status.phase}' 2>/dev/null)" == Failed ]]; then
  kubectl -n "${APP_NS}" delete msvc "${NAME}" --wait --timeout=120s
fi
kubectl -n "${APP_NS}" apply -f examples/digits.yaml
deadline=$((SECONDS + READY_TIMEOUT)); last=""
while :; do
  line="$(kubectl -n "${APP_NS}" get msvc "${NAME}" \
    -o jsonpath='{.status.phase} {.status.ready} {.status.message}' 2>/dev/null || true)"
  if [[ "${line}" != "${last}" ]]; then printf '    [%4ds] %s\n' "$((SECONDS - T0))" "${line:-(no status yet)}"; last="${line}"; fi
  case "${line}" in
    Ready*) break ;;
    Failed*) kubectl -n "${APP_NS}" describe msvc "${NAME}" >&2; die "${NAME} failed" ;;
  esac
  [[ ${SECONDS} -lt ${deadline} ]] || { kubectl -n "${APP_NS}" describe msvc "${NAME}" >&2; die "not Ready in ${READY_TIMEOUT}s"; }
  sleep 3
done

# ------------------------------------------------------------------ 7. show it
step "kubectl get msvc"
kubectl -n "${APP_NS}" get msvc
step "optimization summary"
kubectl -n "${APP_NS}" get msvc "${NAME}" -o jsonpath='{.status.optimization}' \
  | "${PYTHON}" hack/print-optimization.py
step "a real inference through the Service"
bash hack/infer.sh "${APP_NS}" "${NAME}" "${OUT}/samples.npz"
step "done in $((SECONDS - T0))s; \`make down\` removes it all"
