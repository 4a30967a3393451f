# shellcheck shell=bash disable=SC2034  # the variables are for the scripts that source this file
# Where this machine's cluster keeps its parts, defined once: sourced by hack/cluster.sh,
# hack/docker-images.sh and hack/mserve-images.sh.
#
# Binaries in ${MSERVE_CACHE}/bin (as NAME-VERSION), cluster state (pki, kubeconfigs, etcd,
# logs, pids) in ${MSERVE_CACHE}/cluster, runtime state of containerd/kubelet in
# /var/lib/mserve and /run/mserve.

LAYOUT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../versions.env
source "${LAYOUT_DIR}/../versions.env"

MSERVE_CACHE="${MSERVE_CACHE:-$HOME/.cache/mserve}"
BIN_DIR="${MSERVE_CACHE}/bin"
STATE="${MSERVE_CACHE}/cluster"
VAR_DIR="/var/lib/mserve"
RUN_DIR="/run/mserve"
CONTAINERD_SOCK="${RUN_DIR}/containerd/containerd.sock"

bin() { echo "${BIN_DIR}/$1-$2"; } # NAME VERSION -> the cached binary
CTR="$(bin ctr "${CONTAINERD_VERSION}")"

# The cluster's own kubectl as `kubectl` on PATH, with its admin kubeconfig (hack/up.sh, down.sh).
use_cluster_kubectl() {
  export KUBECONFIG="${STATE}/admin.kubeconfig"
  mkdir -p "${BIN_DIR}/kubectl-dir"
  ln -sf "$(bin kubectl "${K8S_VERSION}")" "${BIN_DIR}/kubectl-dir/kubectl"
  PATH="${BIN_DIR}/kubectl-dir:${PATH}"
}

# ctr on the cluster's containerd; its cgroup v1 deprecation warnings are dropped, errors kept.
ctr() {
  local rc=0 err
  err="$(mktemp)"
  "${CTR}" -a "${CONTAINERD_SOCK}" "$@" 2>"${err}" || rc=$?
  grep -v 'DEPRECATION: The support for cgroup v1' "${err}" >&2 || true
  rm -f "${err}"
  return "${rc}"
}
