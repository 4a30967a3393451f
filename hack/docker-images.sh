#!/usr/bin/env bash
# Any image with this machine's Docker, and into the cluster's containerd (no registry here).
#
#   hack/docker-images.sh docker         start dockerd if it is not running
#   hack/docker-images.sh base           Debian bookworm base (debootstrap), named ${BASE_IMAGE}
#   hack/docker-images.sh build NAME DOCKERFILE [CONTEXT] [--build-arg K=V ...]   docker build -t NAME
#   hack/docker-images.sh load NAME      docker save NAME | ctr -n k8s.io images import (same name)
#   hack/docker-images.sh addon-tars     build the pause/coredns/metrics-server/prometheus image tarballs (cached)
#   hack/docker-images.sh prometheus-tar build the e2e tier's Prometheus image tarball only; print its path
#   hack/docker-images.sh addon-tar NAME path of one cached add-on tarball
#
# Pods use these images with imagePullPolicy IfNotPresent (or Never): there is nothing to pull from.
# mserve's own images: hack/mserve-images.sh build|load, which calls this script. One by hand:
#   hack/docker-images.sh base
#   hack/docker-images.sh build mserve-base:dev base-image/Dockerfile base-image --build-arg BASE_IMAGE=mserve/debian-base:bookworm
#   hack/docker-images.sh build mserve-runtime:dev runtime/Dockerfile . --build-arg MSERVE_BASE=mserve-base:dev
#   hack/docker-images.sh load mserve-runtime:dev
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=cluster/layout.sh
source "${HACK_DIR}/cluster/layout.sh"
IMAGE_CACHE="${MSERVE_CACHE}/images"
DOCKER_DIR="${MSERVE_CACHE}/docker"
BASE_IMAGE="${BASE_IMAGE:-mserve/debian-base:bookworm}"
# The legacy builder works with Debian's dockerd and needs no buildx plugin.
export DOCKER_BUILDKIT=0

log() { printf '%s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_docker() {
  if docker info >/dev/null 2>&1; then return 0; fi
  if ! command -v dockerd >/dev/null; then
    log "installing Debian's docker.io"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io >/dev/null
  fi
  mkdir -p "${DOCKER_DIR}"
  log "starting dockerd (log: ${DOCKER_DIR}/dockerd.log)"
  # No docker iptables rules (its FORWARD DROP policy would cut pod traffic) and no bridge:
  # builds run with --network host instead.
  # dockerd outlives this script: it must not inherit the caller's descriptors (a `flock`'s lock
  # would then stay held as long as dockerd runs, and a pipe's reader would never see its end).
  (
    for fd in /proc/self/fd/*; do
      n="${fd##*/}"
      if [[ "${n}" -gt 2 ]]; then eval "exec ${n}>&-" 2>/dev/null || true; fi
    done
    exec setsid dockerd --iptables=false --ip-masq=false --bridge=none --pidfile "${DOCKER_DIR}/dockerd.pid"
  ) >>"${DOCKER_DIR}/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd ready (pid $(cat "${DOCKER_DIR}/dockerd.pid"))"; return 0; }
    sleep 1
  done
  tail -n 20 "${DOCKER_DIR}/dockerd.log" >&2
  die "dockerd did not become ready in 60s"
}

cmd_build() { # NAME DOCKERFILE [CONTEXT] [docker build args...]
  local name="${1:?usage: docker-images.sh build NAME DOCKERFILE [CONTEXT] [--build-arg K=V ...]}"
  local dockerfile="${2:?usage: docker-images.sh build NAME DOCKERFILE [CONTEXT] [--build-arg K=V ...]}"
  shift 2
  local context="."
  if [[ $# -gt 0 && "$1" != --* ]]; then context="$1"; shift; fi
  ensure_docker
  local t0=${SECONDS}
  docker build --network host -t "${name}" -f "${dockerfile}" "$@" "${context}" >&2
  log "built ${name} in $((SECONDS - t0))s"
}

cmd_load() { # NAME
  local name="${1:?usage: docker-images.sh load NAME}"
  [[ -S "${CONTAINERD_SOCK}" ]] || die "the cluster's containerd is not running (${CONTAINERD_SOCK}); run hack/cluster.sh up"
  ensure_docker
  local t0=${SECONDS}
  docker save "${name}" | ctr -n k8s.io images import --local - >/dev/null
  # containerd names a short docker ref in full (docker.io/library/...), as the kubelet asks for it.
  local full; full="$(normalize "${name}")"
  ctr -n k8s.io images ls -q | grep -x "${full}" >/dev/null || die "import did not produce ${full}"
  log "loaded ${name} into the cluster's containerd (k8s.io namespace) as ${full} in $((SECONDS - t0))s"
}

normalize() { # docker's short names -> the full reference the kubelet asks containerd for
  local n="$1"
  [[ "${n}" == *:* || "${n}" == *@* ]] || n="${n}:latest"
  local first="${n%%/*}"
  if [[ "${n}" != */* ]]; then n="docker.io/library/${n}"
  elif [[ "${first}" != *.* && "${first}" != *:* && "${first}" != localhost ]]; then n="docker.io/${n}"; fi
  echo "${n}"
}

cmd_base() {
  ensure_docker
  if docker image inspect "${BASE_IMAGE}" >/dev/null 2>&1; then log "${BASE_IMAGE} present"; return 0; fi
  if ! command -v debootstrap >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  local tar="${IMAGE_CACHE}/debian-base-bookworm.tar" t0=${SECONDS}
  mkdir -p "${IMAGE_CACHE}"
  if [[ ! -f "${tar}" ]]; then
    local root; root="$(mktemp -d /var/tmp/mserve-debootstrap.XXXXXX)"
    local mirror; mirror="$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
    log "debootstrap bookworm (minbase + python3, python3-venv, ca-certificates) from ${mirror:-http://deb.debian.org/debian}"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
      bookworm "${root}" "${mirror:-http://deb.debian.org/debian}" >"${IMAGE_CACHE}/debootstrap.log" 2>&1 \
      || { tail -n 20 "${IMAGE_CACHE}/debootstrap.log" >&2; rm -rf "${root}"; die "debootstrap failed"; }
    # pip inside builds must trust the same CAs as this host.
    cp /etc/ssl/certs/ca-certificates.crt "${root}/etc/ssl/certs/ca-certificates.crt"
    chroot "${root}" apt-get clean
    rm -rf "${root}/var/lib/apt/lists/"* "${root}/var/cache/apt/"*.bin
    if ! { tar -C "${root}" --numeric-owner -cf "${tar}.tmp" . && mv "${tar}.tmp" "${tar}"; }; then
      rm -rf "${root}" "${tar}.tmp"
      die "could not write the base image's tarball ${tar}"
    fi
    rm -rf "${root}"
  fi
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    "${tar}" "${BASE_IMAGE}" >/dev/null
  log "built ${BASE_IMAGE} in $((SECONDS - t0))s"
}

# ---------------------------------------------------------------- cluster add-on images
addon_tar_path() { # IMAGE -> cached tarball
  local n="${1#mserve.local/}"
  echo "${IMAGE_CACHE}/${n//[:\/]/-}.tar"
}

# addon IMAGE BINARY ENTRYPOINT_JSON [USER]: FROM scratch image with one static binary, saved as a tarball
addon() {
  local image="$1" binary="$2" entrypoint="$3" user="${4:-}"
  local tar; tar="$(addon_tar_path "${image}")"
  [[ -f "${tar}" ]] && return 0
  [[ -x "${binary}" ]] || die "missing ${binary}: run hack/build.sh addons prometheus"
  ensure_docker
  local ctx; ctx="$(mktemp -d)"
  cp "${binary}" "${ctx}/$(basename "${entrypoint//[\[\]\"]/}")"
  {
    echo "FROM scratch"
    echo "COPY $(basename "${entrypoint//[\[\]\"]/}") ${entrypoint//[\[\]\"]/}"
    [[ -z "${user}" ]] || echo "USER ${user}"
    echo "ENTRYPOINT ${entrypoint}"
  } >"${ctx}/Dockerfile"
  docker build -q -t "${image}" "${ctx}" >"${ctx}.log" 2>&1 || { cat "${ctx}.log" >&2; die "docker build ${image} failed"; }
  rm -f "${ctx}.log"
  mkdir -p "${IMAGE_CACHE}"
  docker save "${image}" -o "${tar}.tmp" && mv "${tar}.tmp" "${tar}"
  rm -rf "${ctx}"
  log "    built ${image} -> ${tar}"
}

cmd_addon_tars() {
  addon "mserve.local/pause:${PAUSE_VERSION}" "${BIN_DIR}/pause-${PAUSE_VERSION}" '["/pause"]' 65535:65535
  addon "mserve.local/coredns:${COREDNS_VERSION}" "${BIN_DIR}/coredns-${COREDNS_VERSION}" '["/coredns"]'
  addon "mserve.local/metrics-server:${METRICS_SERVER_VERSION}" "${BIN_DIR}/metrics-server-${METRICS_SERVER_VERSION}" '["/metrics-server"]' 65534:65534
  cmd_prometheus_tar >/dev/null
}

# the e2e tier's Prometheus (tests/e2e/e2e_prometheus.py deploys it); prints its tarball
cmd_prometheus_tar() {
  local image="mserve.local/prometheus:${PROMETHEUS_VERSION}"
  addon "${image}" "${BIN_DIR}/prometheus-${PROMETHEUS_VERSION}" '["/prometheus"]' 65534:65534
  addon_tar_path "${image}"
}

main() {
  local cmd="${1:-}"; shift || true
  case "${cmd}" in
    build) cmd_build "$@" ;;
    load) cmd_load "$@" ;;
    base) cmd_base ;;
    docker) ensure_docker ;;
    addon-tars) cmd_addon_tars ;;
    addon-tar) addon_tar_path "${1:?image}" ;;
    prometheus-tar) cmd_prometheus_tar ;;
    *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
