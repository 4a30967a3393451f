#!/usr/bin/env bash
# The users' path: mserve on a kind cluster (laptop with Docker and kind installed).
#
#   hack/kind.sh up     create the kind cluster (hack/kind-config.yaml), metrics-server,
#                       build the project's images and `kind load` them
#   hack/kind.sh down   delete the kind cluster
#
# Then: export KUBECONFIG=$(hack/kind.sh kubeconfig) and run the e2e suite (it takes any
# cluster named by KUBECONFIG): pytest tests/cluster tests/e2e
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "${HACK_DIR}/.." && pwd)"
# shellcheck disable=SC1091  # versions.env, beside this script
source "${HACK_DIR}/versions.env"
CLUSTER="${KIND_CLUSTER_NAME:-mserve}"
KUBECONFIG_FILE="${MSERVE_CACHE:-$HOME/.cache/mserve}/kind/${CLUSTER}.kubeconfig"
TAG="${MSERVE_IMAGE_TAG:-$(awk -F'"' '/^version *=/ { print $2; exit }' "${REPO}/pyproject.toml")}"
# image name -> Dockerfile; each on mserve-base (base-image/), built first on its default
# BASE_IMAGE (pulled from Docker Hub)
BASE="mserve-base:${TAG}"
IMAGES=("mserve-runtime:${TAG}=runtime/Dockerfile" "mserve-optimizer:${TAG}=optimizer/Dockerfile"
        "mserve-operator:${TAG}=operator/Dockerfile")

cmd_up() {
  command -v kind >/dev/null || { echo "kind is not installed: https://kind.sigs.k8s.io/docs/user/quick-start/" >&2; exit 1; }
  cd "${REPO}"
  mkdir -p .work/models "$(dirname "${KUBECONFIG_FILE}")"
  if ! kind get clusters | grep -x "${CLUSTER}" >/dev/null; then
    kind create cluster --name "${CLUSTER}" --image "${KIND_NODE_IMAGE}" \
      --config "${HACK_DIR}/kind-config.yaml" --kubeconfig "${KUBECONFIG_FILE}" --wait 120s
  fi
  kind get kubeconfig --name "${CLUSTER}" >"${KUBECONFIG_FILE}"
  # metrics-server from its public image (kubelet certificates in kind are self-signed too)
  sed -e "s|@METRICS_SERVER_IMAGE@|registry.k8s.io/metrics-server/metrics-server:${METRICS_SERVER_VERSION}|" \
      -e "s|imagePullPolicy: Never|imagePullPolicy: IfNotPresent|" "${HACK_DIR}/addons/metrics-server.yaml" \
    | kubectl --kubeconfig "${KUBECONFIG_FILE}" apply -f -
  local spec
  docker build -t "${BASE}" base-image
  for spec in "${IMAGES[@]}"; do
    docker build -t "${spec%%=*}" -f "${spec#*=}" --build-arg "MSERVE_BASE=${BASE}" .
    kind load docker-image --name "${CLUSTER}" "${spec%%=*}"
  done
  # the e2e tier's Prometheus (tests/e2e/e2e_prometheus.py), built from its Go module as here
  "${HACK_DIR}/build.sh" prometheus
  kind load image-archive --name "${CLUSTER}" "$("${HACK_DIR}/docker-images.sh" prometheus-tar)"
  echo "kind cluster ${CLUSTER} ready: export KUBECONFIG=${KUBECONFIG_FILE}"
}

case "${1:-}" in
  up) cmd_up ;;
  down) kind delete cluster --name "${CLUSTER}"; rm -f "${KUBECONFIG_FILE}" ;;
  kubeconfig) echo "${KUBECONFIG_FILE}" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
