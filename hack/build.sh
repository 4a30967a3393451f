#!/usr/bin/env bash
# Build the cluster's binaries from their upstream Go modules (one small module per project
# under hack/build/<project>/), cached as ${MSERVE_CACHE}/bin/<name>-<version>.
#
#   hack/build.sh control-plane   etcd, kube-apiserver, kube-controller-manager, kubectl
#   hack/build.sh node            kube-scheduler, kubelet, kube-proxy, containerd (+shim, ctr)
#   hack/build.sh addons          coredns, metrics-server, pause
#   hack/build.sh helm
#   hack/build.sh minio           the in-cluster artifact store (server only, not `mc`)
#   hack/build.sh kube-router     the NetworkPolicy enforcer (kube-router's firewall only; docs/cluster.md)
#   hack/build.sh prometheus      the e2e tier's metrics store (kubernetes service discovery only)
#   hack/build.sh all             everything above
#   hack/build.sh vegeta          open-loop HTTP load generator (benchmarks only; not in `all`)
#
# A binary already in the cache is never rebuilt. The Go build cache lives in ${MSERVE_CACHE}/go-build.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091  # versions.env, beside this script
source "${HACK_DIR}/versions.env"
MSERVE_CACHE="${MSERVE_CACHE:-$HOME/.cache/mserve}"
BIN_DIR="${MSERVE_CACHE}/bin"
export GOCACHE="${MSERVE_CACHE}/go-build"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
mkdir -p "${BIN_DIR}" "${GOCACHE}"

BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The Go module zips carry no git metadata: stamp a recognisable commit instead of the
# '$Format:%H$' placeholder so version strings stay parseable.
FAKE_COMMIT="0000000000000000000000000000000000000000"

log() { printf '[build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# cached NAME VERSION -> path of the cached binary
cached() { echo "${BIN_DIR}/$1-$2"; }

# go_build MODULE_DIR VERSION "LDFLAGS" "TAGS" PKG:NAME...
# Builds all missing binaries of one module in a single `go build` (shared compile work).
go_build() {
  local mod_dir="$1" version="$2" ldflags="$3" tags="$4"; shift 4
  local pkgs=() names=() spec
  for spec in "$@"; do
    local pkg="${spec%%:*}" name="${spec##*:}"
    if [[ -x "$(cached "${name}" "${version}")" ]]; then continue; fi
    pkgs+=("${pkg}"); names+=("${name}")
  done
  if [[ ${#pkgs[@]} -eq 0 ]]; then log "cached: ${*##*:} (${version})"; return 0; fi
  local tmp; tmp="$(mktemp -d "${BIN_DIR}/.build.XXXXXX")"
  local t0=${SECONDS}
  log "building ${names[*]} ${version} from ${mod_dir#"${HACK_DIR}/"} (cold builds take minutes on 2 cores)"
  if ! (
    cd "${mod_dir}"
    CGO_ENABLED="${CGO_ENABLED:-0}" nice -n 10 go build -trimpath -tags "${tags}" \
      -ldflags "-s -w ${ldflags}" -o "${tmp}/" "${pkgs[@]}"
  ); then
    rm -rf "${tmp}"  # a failed build leaves nothing half-made in the cache
    log "ERROR: go build of ${names[*]} ${version} failed"
    return 1
  fi
  local i
  for i in "${!pkgs[@]}"; do
    local built
    built="${tmp}/$(basename "${pkgs[$i]}")"
    # a package at a module root (etcd, coredns) builds to the module's last path element
    [[ -f "${built}" ]] || built="$(find "${tmp}" -maxdepth 1 -type f | head -n 1)"
    mv "${built}" "$(cached "${names[$i]}" "${version}")"
  done
  rmdir "${tmp}" 2>/dev/null || rm -rf "${tmp}"
  log "built ${names[*]} in $((SECONDS - t0))s"
}

# pinned MODULE_DIR MODULE VERSION: the go.mod must require what versions.env says
pinned() {
  grep -Eq "^[[:space:]]*(require[[:space:]]+)?$2 $3([[:space:]]|\$)" "$1/go.mod" \
    || { echo "hack/versions.env says $2 $3 but ${1#"${HACK_DIR}/"}/go.mod requires another version:" \
              "cd ${1} && go get $2@$3 && go mod tidy" >&2; exit 1; }
}

k8s_ldflags() {
  local v="${K8S_VERSION}" major minor flags="" pkg
  major="${v#v}"; major="${major%%.*}"
  minor="${v#v*.}"; minor="${minor%%.*}"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
    flags+=" -X ${pkg}.gitCommit=${FAKE_COMMIT} -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${BUILD_DATE}"
  done
  echo "${flags}"
}

build_k8s() { # NAME...
  pinned "${HACK_DIR}/build/kubernetes" k8s.io/kubernetes "${K8S_VERSION}"
  local specs=() n
  for n in "$@"; do specs+=("k8s.io/kubernetes/cmd/${n}:${n}"); done
  go_build "${HACK_DIR}/build/kubernetes" "${K8S_VERSION}" "$(k8s_ldflags)" "" "${specs[@]}"
}

build_etcd() {
  pinned "${HACK_DIR}/build/etcd" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}"
  go_build "${HACK_DIR}/build/etcd" "${ETCD_VERSION}" \
    "-X go.etcd.io/etcd/api/v3/version.GitSHA=${FAKE_COMMIT:0:8}" "" \
    "go.etcd.io/etcd/server/v3:etcd"
}

build_containerd() {
  local p=github.com/containerd/containerd/v2
  pinned "${HACK_DIR}/build/containerd" "${p}" "${CONTAINERD_VERSION}"
  go_build "${HACK_DIR}/build/containerd" "${CONTAINERD_VERSION}" \
    "-X ${p}/version.Version=${CONTAINERD_VERSION} -X ${p}/version.Revision=${FAKE_COMMIT} -X ${p}/version.Package=${p}" \
    "no_btrfs no_devmapper no_zfs no_aufs" \
    "${p}/cmd/containerd:containerd" "${p}/cmd/containerd-shim-runc-v2:containerd-shim-runc-v2" "${p}/cmd/ctr:ctr"
}

build_coredns() {
  pinned "${HACK_DIR}/build/coredns" github.com/coredns/coredns "${COREDNS_VERSION}"
  go_build "${HACK_DIR}/build/coredns" "${COREDNS_VERSION}" \
    "-X github.com/coredns/coredns/coremain.GitCommit=${FAKE_COMMIT:0:8}" "" \
    "github.com/coredns/coredns:coredns"
}

build_metrics_server() {
  pinned "${HACK_DIR}/build/metrics-server" sigs.k8s.io/metrics-server "${METRICS_SERVER_VERSION}"
  local flags="" pkg=k8s.io/client-go/pkg/version
  flags+=" -X ${pkg}.gitVersion=${METRICS_SERVER_VERSION} -X ${pkg}.gitCommit=${FAKE_COMMIT}"
  flags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${BUILD_DATE}"
  go_build "${HACK_DIR}/build/metrics-server" "${METRICS_SERVER_VERSION}" "${flags}" "" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server:metrics-server"
}

build_pause() {
  go_build "${HACK_DIR}/images/pause" "${PAUSE_VERSION}" "" "" "mserve.local/hack/images/pause:pause"
}

build_helm() {
  pinned "${HACK_DIR}/build/helm" helm.sh/helm/v3 "${HELM_VERSION}"
  local minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  go_build "${HACK_DIR}/build/helm" "${HELM_VERSION}" \
    "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor}" "" \
    "helm.sh/helm/v3/cmd/helm:helm"
}

# MinIO publishes no tagged module versions: versions.env pins a pseudo-version, whose timestamp
# and commit become MinIO's own version strings (as its buildscripts/gen-ldflags.go makes them).
build_minio() {
  pinned "${HACK_DIR}/build/minio" github.com/minio/minio "${MINIO_VERSION}"
  local stamp="${MINIO_VERSION#v0.0.0-}" commit="${MINIO_VERSION##*-}" p=github.com/minio/minio/cmd
  stamp="${stamp%%-*}"
  local day="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}" hh="${stamp:8:2}" mm="${stamp:10:2}" ss="${stamp:12:2}"
  go_build "${HACK_DIR}/build/minio" "${MINIO_VERSION}" \
    "-X ${p}.Version=${day}T${hh}:${mm}:${ss}Z -X ${p}.ReleaseTag=DEVELOPMENT.${day}T${hh}-${mm}-${ss}Z -X ${p}.CopyrightYear=${stamp:0:4} -X ${p}.CommitID=${commit} -X ${p}.ShortCommitID=${commit}" \
    "kqueue" "github.com/minio/minio:minio"
}

# kube-router enforces NetworkPolicy with iptables + ipset; hack/cluster.sh runs only its
# firewall (docs/cluster.md says why not kube-network-policies on this kernel).
build_kube_router() {
  local p=github.com/cloudnativelabs/kube-router/v2
  pinned "${HACK_DIR}/build/kube-router" "${p}" "${KUBE_ROUTER_VERSION}"
  go_build "${HACK_DIR}/build/kube-router" "${KUBE_ROUTER_VERSION}" \
    "-X ${p}/pkg/version.Version=${KUBE_ROUTER_VERSION} -X ${p}/pkg/version.BuildDate=${BUILD_DATE}" "" \
    "${p}/cmd/kube-router:kube-router"
}

# Prometheus 3.x (module v0.3xx). remove_all_sd drops every service-discovery plugin but the ones
# enabled by name (plugins/plugin_*.go); static and file SD are always built in. Without the
# builtinassets tag the web UI is left out; the HTTP API (all the e2e tier queries) stays.
build_prometheus() {
  local p=github.com/prometheus/prometheus v="${PROMETHEUS_VERSION}" c=github.com/prometheus/common/version
  pinned "${HACK_DIR}/build/prometheus" "${p}" "${v}"
  # module v0.316.0 is Prometheus 3.16.0
  local mp="${v#v0.}"; local release="3.$(( ${mp%%.*} - 300 )).${mp#*.}"
  go_build "${HACK_DIR}/build/prometheus" "${v}" \
    "-X ${c}.Version=${release} -X ${c}.Revision=${FAKE_COMMIT} -X ${c}.Branch=HEAD -X ${c}.BuildUser=mserve -X ${c}.BuildDate=${BUILD_DATE}" \
    "remove_all_sd enable_kubernetes_sd netgo" "${p}/cmd/prometheus:prometheus"
}

build_vegeta() {
  pinned "${HACK_DIR}/build/vegeta" github.com/tsenart/vegeta/v12 "${VEGETA_VERSION}"
  go_build "${HACK_DIR}/build/vegeta" "${VEGETA_VERSION}" \
    "-X main.Version=${VEGETA_VERSION} -X main.Commit=${FAKE_COMMIT} -X main.Date=${BUILD_DATE}" "" \
    "github.com/tsenart/vegeta/v12:vegeta"
}

main() {
  local target t0=${SECONDS}
  for target in "${@:-all}"; do
    case "${target}" in
      control-plane) build_etcd; build_k8s kube-apiserver kube-controller-manager kubectl ;;
      node) build_k8s kube-scheduler kubelet kube-proxy; build_containerd ;;
      addons) build_pause; build_coredns; build_metrics_server ;;
      helm) build_helm ;;
      minio) build_minio ;;
      kube-router) build_kube_router ;;
      prometheus) build_prometheus ;;
      all) main control-plane node addons helm minio kube-router prometheus ;;
      vegeta) build_vegeta ;;
      *) echo "unknown target ${target}" >&2; exit 2 ;;
    esac
  done
  log "done ($*) in $((SECONDS - t0))s"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then main "$@"; fi
