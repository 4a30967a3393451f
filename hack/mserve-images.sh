#!/usr/bin/env bash
# mserve's own images: build them on the local base image, load them into a cluster.
#
#   hack/mserve-images.sh build [COMPONENT...]   runtime optimizer operator s3 (the local store: MinIO); runtime-gpu on request
#   hack/mserve-images.sh load  [COMPONENT|IMAGE...]  into the cluster: this machine's containerd, or kind
#   hack/mserve-images.sh names                  print "component image" lines
#   hack/mserve-images.sh sizes                  print each built image's size
#
# Images are named mserve-<component>:<version> (the chart's appVersion), which is what the
# chart's defaults ask for. Each builds on mserve-base:<version> (base-image/), built first on
# BASE_IMAGE, by default the debootstrap base of hack/docker-images.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=cluster/layout.sh
source hack/cluster/layout.sh

VERSION="${MSERVE_VERSION:-$(awk -F'"' '/^appVersion:/ { print $2 }' charts/mserve/Chart.yaml)}"
BASE_IMAGE="${BASE_IMAGE:-mserve/debian-base:bookworm}"
MSERVE_BASE="mserve-base:${VERSION}"
DEFAULT_COMPONENTS=(runtime optimizer operator s3)
STAMPS="${MSERVE_CACHE}/images/loaded"

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

# The store's context: MinIO's static binary (hack/build.sh minio, cached) and its Dockerfile,
# staged in the cache so the build context is two files, not the whole bin cache.
s3_context() {
  bash hack/build.sh minio >&2
  local ctx="${MSERVE_CACHE}/images/s3-context"
  mkdir -p "${ctx}"
  cp -f hack/s3-store/Dockerfile "${ctx}/Dockerfile"
  ln -f "${BIN_DIR}/minio-${MINIO_VERSION}" "${ctx}/minio" 2>/dev/null \
    || cp -f "${BIN_DIR}/minio-${MINIO_VERSION}" "${ctx}/minio"
  echo "${ctx}"
}

build() { # NAME DOCKERFILE CONTEXT
  bash hack/docker-images.sh build "$@" --build-arg "VERSION=${VERSION}" \
    --build-arg "BASE_IMAGE=${BASE_IMAGE}" --build-arg "MSERVE_BASE=${MSERVE_BASE}" \
    --build-arg "MSERVE_RUNTIME=$(image runtime)"
}

cmd_build() {
  local components=("${@:-${DEFAULT_COMPONENTS[@]}}") c
  bash hack/docker-images.sh base
  log "building ${MSERVE_BASE} from base-image/Dockerfile on ${BASE_IMAGE}"
  build "${MSERVE_BASE}" base-image/Dockerfile base-image
  for c in "${components[@]}"; do
    # The GPU image is the runtime image's venv with onnxruntime-gpu: the runtime comes first.
    if [[ "${c}" == runtime-gpu && " ${components[*]} " != *" runtime "* ]]; then
      log "building $(image runtime) from $(dockerfile runtime) (runtime-gpu starts from it)"
      build "$(image runtime)" "$(dockerfile runtime)" .
    fi
    log "building $(image "${c}") from $(dockerfile "${c}")"
    if [[ "${c}" == s3 ]]; then
      # MinIO's binary is staged with its Dockerfile: the context is those two files.
      local ctx
      ctx="$(s3_context)"
      build "$(image s3)" "${ctx}/Dockerfile" "${ctx}" --build-arg "MINIO_VERSION=${MINIO_VERSION}"
    else
      build "$(image "${c}")" "$(dockerfile "${c}")" .
    fi
  done
  # Each rebuild leaves the previous image untagged (the optimizer's is 3.7 GB): drop ours,
  # or a day of edits fills the disk and the kubelet evicts pods for disk pressure. The
  # dependency stages (`deps`, untagged, labelled like mserve-base) stay: they are the build
  # cache, and pruning them re-downloads torch on every build.
  docker image prune -f --filter "label=org.opencontainers.image.licenses=Apache-2.0" \
    --filter "label=org.opencontainers.image.version=${VERSION}" \
    --filter "label!=org.opencontainers.image.title=mserve-base" >/dev/null
}

# This machine's containerd (hack/cluster.sh): skip an import when containerd already has the
# image under its name and a stamp says it is the same Docker image (a gigabyte import is a minute).
load_local() { # NAME
  local name="$1" id stamp full
  id="$(docker image inspect -f '{{.Id}}' "${name}")"
  stamp="${STAMPS}/${name//[:\/]/_}"
  full="docker.io/library/${name}"
  if [[ "$(cat "${stamp}" 2>/dev/null)" == "${id}" ]] \
    && ctr -n k8s.io images ls -q 2>/dev/null | grep -qx "${full}"; then
    log "${name} already loaded (${id:7:12})"
    return 0
  fi
  bash hack/docker-images.sh load "${name}"
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
  *) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
