#!/usr/bin/env bash
# Build mserve's images on the local base image and (optionally) load them into a cluster.
#
#   hack/images.sh build [COMPONENT...]   runtime optimizer operator s3 (the local store: MinIO); runtime-gpu on request
#   hack/images.sh load  [COMPONENT|IMAGE...]  into the cluster: this machine's containerd, or kind
#   hack/images.sh names                  print "component image" lines
#   hack/images.sh sizes                  print each built image's size
#
# Images are named mserve-<component>:<version> (the chart's appVersion), which is what the
# chart's defaults ask for; BASE_IMAGE defaults to the debootstrap base of hack/image.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VERSION="${MSERVE_VERSION:-$(awk -F'"' '/^appVersion:/ { print $2 }' charts/mserve/Chart.yaml)}"
BASE_IMAGE="${BASE_IMAGE:-mserve/debian-base:bookworm}"
DEFAULT_COMPONENTS=(runtime optimizer operator s3)
# shellcheck disable=SC1091  # MINIO_VERSION, CONTAINERD_VERSION
source hack/versions.env

log() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

dockerfile() {
  case "$1" in
    runtime) echo runtime/Dockerfile ;;
    runtime-gpu) echo runtime/Dockerfile.gpu ;;
    optimizer) echo optimizer/Dockerfile ;;
    operator) echo operator/Dockerfile ;;
    s3) echo hack/s3-store/Dockerfile ;;
    *) echo "unknown component $1" >&2; exit 2 ;;
  esac
}

image() { if [[ "$1" == s3 ]]; then echo "mserve-s3:dev"; else echo "mserve-$1:${VERSION}"; fi; }
context() { if [[ "$1" == s3 ]]; then s3_context; else echo .; fi; }

# The store's context: MinIO's static binary (hack/build.sh minio, cached) and its Dockerfile,
# staged in the cache so the build context is two files, not the whole bin cache.
s3_context() {
  bash hack/build.sh minio >&2
  local ctx="${MSERVE_CACHE:-$HOME/.cache/mserve}/images/s3-context"
  mkdir -p "${ctx}"
  cp -f hack/s3-store/Dockerfile "${ctx}/Dockerfile"
  ln -f "${MSERVE_CACHE:-$HOME/.cache/mserve}/bin/minio-${MINIO_VERSION}" "${ctx}/minio" 2>/dev/null \
    || cp -f "${MSERVE_CACHE:-$HOME/.cache/mserve}/bin/minio-${MINIO_VERSION}" "${ctx}/minio"
  echo "${ctx}"
}

cmd_build() {
  local components=("${@:-${DEFAULT_COMPONENTS[@]}}") c
  bash hack/image.sh base
  for c in "${components[@]}"; do
    log "building $(image "${c}") from $(dockerfile "${c}")"
    local ctx file args=(--build-arg "BASE_IMAGE=${BASE_IMAGE}" --build-arg "VERSION=${VERSION}")
    ctx="$(context "${c}")" file="$(dockerfile "${c}")"
    if [[ "${c}" == s3 ]]; then file="${ctx}/Dockerfile" args+=(--build-arg "MINIO_VERSION=${MINIO_VERSION}"); fi
    bash hack/image.sh build "$(image "${c}")" "${file}" "${ctx}" "${args[@]}"
  done
  # Each rebuild leaves the previous image untagged (the optimizer's is 3.7 GB): drop ours,
  # or a day of edits fills the disk and the kubelet evicts pods for disk pressure.
  docker image prune -f --filter "label=org.opencontainers.image.licenses=Apache-2.0" \
    --filter "label=org.opencontainers.image.version=${VERSION}" >/dev/null
}

# This machine's containerd (hack/cluster.sh): skip an import when containerd already has the
# image under its name and a stamp says it is the same Docker image (a gigabyte import is a minute).
CTR="${MSERVE_CACHE:-$HOME/.cache/mserve}/bin/ctr-${CONTAINERD_VERSION}"
CONTAINERD_SOCK="/run/mserve/containerd/containerd.sock"
STAMPS="${MSERVE_CACHE:-$HOME/.cache/mserve}/images/loaded"

load_local() { # NAME
  local name="$1" id stamp full
  id="$(docker image inspect -f '{{.Id}}' "${name}")"
  stamp="${STAMPS}/${name//[:\/]/_}"
  full="docker.io/library/${name}"
  if [[ "$(cat "${stamp}" 2>/dev/null)" == "${id}" ]] \
    && "${CTR}" -a "${CONTAINERD_SOCK}" -n k8s.io images ls -q 2>/dev/null | grep -qx "${full}"; then
    log "${name} already loaded (${id:7:12})"
    return 0
  fi
  bash hack/image.sh load "${name}"
  mkdir -p "${STAMPS}" && echo "${id}" > "${stamp}"
}

cmd_load() {
  local components=("${@:-${DEFAULT_COMPONENTS[@]}}") c context
  context="$(kubectl config current-context 2>/dev/null || true)"
  for c in "${components[@]}"; do
    if [[ "${c}" == */* || "${c}" == *:* ]]; then local name="${c}"; else local name; name="$(image "${c}")"; fi
    if [[ "${context}" == kind-* ]]; then
      log "loading ${name} into kind cluster ${context#kind-}"
      kind load docker-image "${name}" --name "${context#kind-}"
    else
      load_local "${name}"
    fi
  done
}

cmd_sizes() {
  local c
  for c in "${@:-${DEFAULT_COMPONENTS[@]}}"; do
    docker image inspect -f '{{.Size}}' "$(image "${c}")" 2>/dev/null \
      | awk -v n="$(image "${c}")" '{ printf "%-32s %6.0f MB\n", n, $1 / 1e6 }' || true
  done
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  load) shift; cmd_load "$@" ;;
  names) for c in "${DEFAULT_COMPONENTS[@]}" runtime-gpu; do echo "${c} $(image "${c}")"; done ;;
  sizes) shift; cmd_sizes "$@" ;;
  *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
