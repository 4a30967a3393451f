#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, from upstream components built
# with `go build` (hack/build.sh) and images built locally (hack/docker-images.sh).
#
#   hack/cluster.sh up [--control-plane-only]   start (idempotent; builds what is missing)
#   hack/cluster.sh down                        stop what `up` started (by recorded pid), clean up
#   hack/cluster.sh status                      what runs, node and pods
#   hack/cluster.sh logs NAME [-f]              a component's log (etcd, kube-apiserver, ...)
#   hack/cluster.sh kubeconfig                  print the admin kubeconfig's path
#   hack/cluster.sh kubectl ARGS...             the cluster's kubectl with the admin kubeconfig
#
# Beside it in hack/cluster/: where things live (layout.sh), certificates (pki.sh), host
# teardown (teardown.sh), and the node's configs as templates (containerd.toml,
# cni-bridge.conflist, kubelet.yaml, kube-proxy.yaml, kube-router-rbac.yaml), like the add-ons in
# hack/addons/. NetworkPolicy is enforced by kube-router's firewall (iptables + ipset; only that
# part of kube-router runs): docs/cluster.md says why not kube-network-policies.
# Networks: pods 10.244.0.0/24 on bridge cni0, services 10.96.0.0/16 routed on the local
# device mserve0 (dummy, or a portless bridge), which also carries the node's address 10.200.0.1.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CLUSTER_DIR="${HACK_DIR}/cluster"
# shellcheck source=cluster/layout.sh
source "${CLUSTER_DIR}/layout.sh"

PKI="${STATE}/pki"
LOGS="${STATE}/logs"
PIDS="${STATE}/pids"
KUBECONFIG_ADMIN="${STATE}/admin.kubeconfig"

# The processes `up` starts, in start order; `down` stops them in reverse.
CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler)
NODE_AGENTS=(containerd kubelet kube-proxy kube-router)
COMPONENTS=("${CONTROL_PLANE[@]}" "${NODE_AGENTS[@]}")

NODE_NAME="mserve"
NODE_IP="10.200.0.1"
POD_CIDR="10.244.0.0/16"
NODE_POD_CIDR="10.244.0.0/24"
POD_GATEWAY="10.244.0.1"
SERVICE_CIDR="10.96.0.0/16"
KUBERNETES_SVC_IP="10.96.0.1"
DNS_SVC_IP="10.96.0.10"
BRIDGE="cni0"
DUMMY="mserve0"
APISERVER_PORT=6443

PAUSE_IMAGE="mserve.local/pause:${PAUSE_VERSION}"
COREDNS_IMAGE="mserve.local/coredns:${COREDNS_VERSION}"
METRICS_SERVER_IMAGE="mserve.local/metrics-server:${METRICS_SERVER_VERSION}"
PROMETHEUS_IMAGE="mserve.local/prometheus:${PROMETHEUS_VERSION}"

KUBECTL="$(bin kubectl "${K8S_VERSION}")"

# ---------------------------------------------------------------- helpers
log() { printf '%s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# step "description" command...: run one step, print its duration
step() {
  local desc="$1"; shift
  local t0; t0="$(now)"
  log "==> ${desc}"
  "$@"
  log "    ${desc}: $(elapsed "${t0}")s"
}

kc() { "${KUBECTL}" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }

# render TEMPLATE: the file with each @NAME@ replaced by the value of the shell variable NAME
render() {
  local text name
  text="$(<"$1")"
  for name in $(grep -o '@[A-Z_][A-Z0-9_]*@' "$1" | tr -d @ | sort -u); do
    [[ -n "${!name+set}" ]] || die "$1: no value for @${name}@"
    text="${text//"@${name}@"/"${!name}"}"
  done
  printf '%s\n' "${text}"
}

# wait_for SECONDS "what" command...: poll until the command succeeds
wait_for() {
  local timeout="$1" what="$2"; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    sleep 1
  done
}

# write_config FILE NAME: write stdin to FILE if its content differs; a running component NAME
# is then restarted by its start step (kube-proxy, for one, exits when its config file changes).
write_config() {
  local file="$1" name="$2" tmp
  tmp="$(mktemp)"
  cat >"${tmp}"
  if [[ -f "${file}" ]] && cmp -s "${tmp}" "${file}"; then rm -f "${tmp}"; return 0; fi
  mv "${tmp}" "${file}" && chmod 644 "${file}"
  if running "${name}"; then log "    ${file##*/} changed: restarting ${name}"; stop "${name}"; fi
}

pid_of() { [[ -f "${PIDS}/$1.pid" ]] && cat "${PIDS}/$1.pid"; }

running() { # NAME: is the recorded process alive (and still ours)?
  local pid; pid="$(pid_of "$1" 2>/dev/null)" || return 1
  [[ -n "${pid}" && -d "/proc/${pid}" ]] || return 1
  tr "\0" " " <"/proc/${pid}/cmdline" | grep -- "${BIN_DIR}/" >/dev/null
}

# start NAME BINARY ARGS...: start a daemon in its own session, record its pid, log to logs/NAME.log
start() {
  local name="$1"; shift
  if running "${name}"; then log "    ${name} already running (pid $(pid_of "${name}"))"; return 0; fi
  mkdir -p "${LOGS}" "${PIDS}"
  setsid "$@" >>"${LOGS}/${name}.log" 2>&1 </dev/null 9>&- &
  echo $! >"${PIDS}/${name}.pid"
  log "    ${name} started (pid $!), log: ${LOGS}/${name}.log"
}

# stop NAME: TERM the recorded pid, KILL after 20 s
stop() {
  local name="$1" pid
  pid="$(pid_of "${name}" 2>/dev/null)" || return 0
  if running "${name}"; then
    kill -TERM "${pid}" 2>/dev/null || true

    for _ in $(seq 1 100); do [[ -d "/proc/${pid}" ]] || break; sleep 0.2; done
    if [[ -d "/proc/${pid}" ]]; then kill -KILL "${pid}" 2>/dev/null || true; fi
    log "    stopped ${name} (pid ${pid})"
  fi
  rm -f "${PIDS}/${name}.pid"
}

rss_mib() { # PID -> resident MiB
  awk '/^VmRSS:/ { printf "%d", $2 / 1024 }' "/proc/$1/status" 2>/dev/null || echo 0
}

# shellcheck source=cluster/pki.sh
source "${CLUSTER_DIR}/pki.sh"
# shellcheck source=cluster/teardown.sh
source "${CLUSTER_DIR}/teardown.sh"

# ---------------------------------------------------------------- preflight + network
# Debian packages the cluster needs (a fresh machine or CI has none of them): command -> package
DEBIAN_PACKAGES="openssl:openssl ip:iproute2 iptables:iptables runc:runc curl:curl conntrack:conntrack
flock:util-linux sysctl:procps ipset:ipset dockerd:docker.io debootstrap:debootstrap /usr/lib/cni/bridge:containernetworking-plugins"

ensure_packages() {
  local pair missing=()
  for pair in ${DEBIAN_PACKAGES}; do
    if [[ "${pair%%:*}" == /* ]]; then [[ -e "${pair%%:*}" ]] && continue
    else command -v "${pair%%:*}" >/dev/null && continue; fi
    missing+=("${pair##*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  command -v apt-get >/dev/null || die "missing packages: ${missing[*]} (and no apt-get to install them)"
  log "    apt-get install ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

preflight() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (kubelet, containerd and the network need it)"
  command -v go >/dev/null || die "Go is needed to build the components (https://go.dev/dl/)"
  ensure_packages
  # Bridged pod -> Service traffic must pass iptables; pods need forwarding.
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
  [[ -d /proc/sys/net/bridge ]] || die "br_netfilter is not available in this kernel"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1
  log "    root, tools, br_netfilter, ip_forward: ok ($(uname -r), $(iptables -V))"
}

setup_network() {
  # The node address and the service range live on a local device with no ports: nothing for
  # them can leave the host. (A portless bridge: this kernel has no dummy driver.)
  if ! ip link show "${DUMMY}" >/dev/null 2>&1; then
    ip link add "${DUMMY}" type dummy 2>/dev/null || ip link add "${DUMMY}" type bridge
  fi
  ip link set "${DUMMY}" up
  ip addr replace "${NODE_IP}/32" dev "${DUMMY}"
  ip route replace "${SERVICE_CIDR}" dev "${DUMMY}"
  # The pod range is unreachable except for this node's /24 on the bridge (which the bridge CNI
  # plugin reuses).
  ip route replace unreachable "${POD_CIDR}"
  if [[ "${NODE_MODE}" == full ]]; then
    if ! ip link show "${BRIDGE}" >/dev/null 2>&1; then
      ip link add "${BRIDGE}" type bridge
    fi
    ip addr replace "${POD_GATEWAY}/24" dev "${BRIDGE}"
    ip link set "${BRIDGE}" up
  fi
  check_routes
}

check_routes() {
  local gw dst route bad=0
  gw="$(ip route show default | awk '/default/ { print $3; exit }')"
  for dst in "${NODE_IP}" "${KUBERNETES_SVC_IP}" "${DNS_SVC_IP}" 10.96.255.254 10.244.0.2 10.244.200.1; do
    route="$(ip route get "${dst}" 2>&1 | head -n 1 || true)"
    if [[ -n "${gw}" && "${route}" == *"via ${gw}"* ]]; then
      log "    FAIL ${dst}: ${route}"; bad=1
    else
      log "    ok   ${dst}: ${route}"
    fi
  done
  ((bad == 0)) || die "a pod/service/node address routes to the default gateway ${gw}"
  log "    no route for ${POD_CIDR}, ${SERVICE_CIDR} or ${NODE_IP} points at the default gateway (${gw:-none})"
}

# ---------------------------------------------------------------- control plane
start_etcd() {
  mkdir -p "${STATE}/etcd" && chmod 700 "${STATE}/etcd"
  start etcd "$(bin etcd "${ETCD_VERSION}")" \
    --name="${NODE_NAME}" --data-dir="${STATE}/etcd" \
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
    --initial-cluster="${NODE_NAME}=http://127.0.0.1:2380" --listen-metrics-urls=http://127.0.0.1:2381 \
    --auto-compaction-retention=1h --quota-backend-bytes=2147483648 --log-level=warn
  wait_for 60 "etcd health" curl -sf http://127.0.0.1:2379/health
}

start_apiserver() {
  start kube-apiserver "$(bin kube-apiserver "${K8S_VERSION}")" \
    --etcd-servers=http://127.0.0.1:2379 \
    --advertise-address="${NODE_IP}" --bind-address=0.0.0.0 --secure-port="${APISERVER_PORT}" \
    --service-cluster-ip-range="${SERVICE_CIDR}" --allow-privileged=true \
    --authorization-mode=Node,RBAC --anonymous-auth=true \
    --enable-admission-plugins=NodeRestriction,PodSecurity \
    --client-ca-file="${PKI}/ca.crt" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" \
    --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP,Hostname \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --requestheader-group-headers=X-Remote-Group --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="${PKI}/front-proxy-client.crt" --proxy-client-key-file="${PKI}/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --profiling=false --v=1
  wait_for 120 "kube-apiserver /readyz" kc get --raw=/readyz
}

start_controller_manager() {
  local kcfg="${STATE}/controller-manager.kubeconfig"
  start kube-controller-manager "$(bin kube-controller-manager "${K8S_VERSION}")" \
    --kubeconfig="${kcfg}" --authentication-kubeconfig="${kcfg}" --authorization-kubeconfig="${kcfg}" \
    --bind-address=127.0.0.1 --leader-elect=false \
    --client-ca-file="${PKI}/ca.crt" --root-ca-file="${PKI}/ca.crt" \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" \
    --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" \
    --service-account-private-key-file="${PKI}/sa.key" --use-service-account-credentials=true \
    --controllers='*,bootstrapsigner,tokencleaner,ttl-after-finished' \
    --allocate-node-cidrs=true --cluster-cidr="${POD_CIDR}" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="${SERVICE_CIDR}" \
    --horizontal-pod-autoscaler-sync-period=5s \
    --horizontal-pod-autoscaler-downscale-stabilization=30s \
    --profiling=false --v=1
  wait_for 60 "kube-controller-manager /healthz" curl -skf https://127.0.0.1:10257/healthz
}

start_scheduler() {
  local kcfg="${STATE}/scheduler.kubeconfig"
  start kube-scheduler "$(bin kube-scheduler "${K8S_VERSION}")" \
    --kubeconfig="${kcfg}" --authentication-kubeconfig="${kcfg}" --authorization-kubeconfig="${kcfg}" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false --v=1
  wait_for 60 "kube-scheduler /healthz" curl -skf https://127.0.0.1:10259/healthz
}

# ---------------------------------------------------------------- node
# (dockerd, which docker-images.sh may start, must not inherit the lock)
addon_images() { "${HACK_DIR}/docker-images.sh" addon-tars 9>&-; }

start_containerd() {
  local dir="${STATE}/containerd"
  mkdir -p "${dir}/bin" "${dir}/cni" "${VAR_DIR}/containerd" "${RUN_DIR}/containerd"
  # containerd finds its shim on PATH: give it the cached, versioned binary under its plain name.
  ln -sf "$(bin containerd-shim-runc-v2 "${CONTAINERD_VERSION}")" "${dir}/bin/containerd-shim-runc-v2"
  CONTAINERD_DIR="${dir}" RUNC="$(command -v runc)" render "${CLUSTER_DIR}/containerd.toml" \
    | write_config "${dir}/config.toml" containerd
  render "${CLUSTER_DIR}/cni-bridge.conflist" | write_config "${dir}/cni/10-mserve-bridge.conflist" none
  PATH="${dir}/bin:${PATH}" start containerd "$(bin containerd "${CONTAINERD_VERSION}")" --config "${dir}/config.toml"
  wait_for 60 "containerd socket" ctr version
}

load_images() {
  local image tar
  for image in "${PAUSE_IMAGE}" "${COREDNS_IMAGE}" "${METRICS_SERVER_IMAGE}" "${PROMETHEUS_IMAGE}"; do
    if ctr -n k8s.io images ls -q | grep -x "${image}" >/dev/null; then continue; fi
    tar="$("${HACK_DIR}/docker-images.sh" addon-tar "${image}")"
    ctr -n k8s.io images import --local "${tar}" >/dev/null
    log "    imported ${image}"
  done
}

start_kubelet() {
  local dir="${STATE}/kubelet"
  mkdir -p "${dir}" "${VAR_DIR}/kubelet" "${VAR_DIR}/pod-logs"
  render "${CLUSTER_DIR}/kubelet.yaml" | write_config "${dir}/config.yaml" kubelet
  start kubelet "$(bin kubelet "${K8S_VERSION}")" \
    --config="${dir}/config.yaml" --kubeconfig="${STATE}/kubelet.kubeconfig" \
    --root-dir="${VAR_DIR}/kubelet" --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" --v=1
  wait_for 60 "kubelet /healthz" curl -sf http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  local dir="${STATE}/kube-proxy"
  mkdir -p "${dir}"
  render "${CLUSTER_DIR}/kube-proxy.yaml" | write_config "${dir}/config.yaml" kube-proxy
  start kube-proxy "$(bin kube-proxy "${K8S_VERSION}")" --config="${dir}/config.yaml" --v=1
  wait_for 60 "kube-proxy /healthz" curl -sf http://127.0.0.1:10256/healthz
}

# kube-router's NetworkPolicy firewall only: no routing (the bridge CNI does that), no service proxy
# (kube-proxy does that). Started last on the node, so it finds the node object; traffic from the
# node itself (kubelet probes, this host's tests) is let through by its "source is LOCAL" rule.
start_kube_router() {
  kc apply -f "${CLUSTER_DIR}/kube-router-rbac.yaml" >/dev/null
  start kube-router "$(bin kube-router "${KUBE_ROUTER_VERSION}")" \
    --kubeconfig="${STATE}/kube-router.kubeconfig" --hostname-override="${NODE_NAME}" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --enable-ipv4=true --enable-ipv6=false --health-port=20244 --metrics-port=0 --v=0
  wait_for 60 "kube-router /healthz" curl -sf http://127.0.0.1:20244/healthz
}

node_ready() {
  [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

apply_addons() {
  local f
  for f in "${HACK_DIR}/addons/"*.yaml; do
    echo "---"
    render "${f}"
  done | kc apply -f - >/dev/null
  kc -n kube-system rollout status deploy/coredns --timeout=120s >/dev/null
  kc -n kube-system rollout status deploy/metrics-server --timeout=120s >/dev/null
  wait_for 120 "metrics API (APIService v1beta1.metrics.k8s.io Available)" \
    kc wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=2s
  log "    coredns and metrics-server available"
}

# ---------------------------------------------------------------- commands
memory_report() {
  local name pid total=0 line="" mib
  for name in "${CONTROL_PLANE[@]}"; do
    pid="$(pid_of "${name}" 2>/dev/null)" || continue
    running "${name}" || continue
    mib="$(rss_mib "${pid}")"; total=$((total + mib)); line+=" ${name}=${mib}MiB"
  done
  log "control-plane resident memory: ${total} MiB (${line# })"
  line=""
  for name in "${NODE_AGENTS[@]}"; do
    running "${name}" || continue
    line+=" ${name}=$(rss_mib "$(pid_of "${name}")")MiB"
  done
  [[ -z "${line}" ]] || log "node agents resident memory:${line}"
}

cmd_up() {
  NODE_MODE=full
  [[ "${1:-}" == "--control-plane-only" ]] && NODE_MODE=control-plane-only
  local t0; t0="$(now)"
  log "mserve cluster up (${NODE_MODE}); Kubernetes ${K8S_VERSION}, etcd ${ETCD_VERSION}, containerd ${CONTAINERD_VERSION}"
  step "preflight" preflight
  if stale_state; then
    log "==> leftovers of a cluster whose processes are gone: cleaning them up first"
    teardown
  fi
  if [[ "${NODE_MODE}" == full ]]; then
    step "build binaries (cached in ${BIN_DIR})" "${HACK_DIR}/build.sh" control-plane node addons kube-router prometheus
  else
    step "build binaries (cached in ${BIN_DIR})" "${HACK_DIR}/build.sh" control-plane
  fi
  step "network (${DUMMY}: ${NODE_IP}, ${SERVICE_CIDR}; ${BRIDGE}: ${NODE_POD_CIDR})" setup_network
  step "certificates and kubeconfigs" make_pki
  step "etcd" start_etcd
  step "kube-apiserver" start_apiserver
  step "kube-controller-manager" start_controller_manager
  if [[ "${NODE_MODE}" == full ]]; then
    step "kube-scheduler" start_scheduler
    step "add-on images (pause, coredns, metrics-server, prometheus)" addon_images
    step "containerd" start_containerd
    step "import images into containerd" load_images
    step "kubelet" start_kubelet
    step "kube-proxy (iptables)" start_kube_proxy
    step "node ${NODE_NAME} Ready" wait_for 120 "node Ready" node_ready
    step "kube-router (NetworkPolicy firewall)" start_kube_router
    step "add-ons: coredns, metrics-server" apply_addons
  fi
  log ""
  log "cluster up in $(elapsed "${t0}")s"
  log "server version: $(kc version -o json | awk -F'"' '/"gitVersion"/ { v = $4 } END { print v }')"
  memory_report
  log "kubeconfig: ${KUBECONFIG_ADMIN}"
  log "  export KUBECONFIG=${KUBECONFIG_ADMIN}"
}

cmd_down() {
  local t0; t0="$(now)"
  teardown
  log "cluster down in $(elapsed "${t0}")s (binaries and images stay cached in ${MSERVE_CACHE})"
}

cmd_status() {
  local name pid
  for name in "${COMPONENTS[@]}"; do
    if running "${name}"; then
      pid="$(pid_of "${name}")"
      printf '%-24s running  pid %-7s rss %5s MiB\n' "${name}" "${pid}" "$(rss_mib "${pid}")"
    else
      printf '%-24s stopped\n' "${name}"
    fi
  done
  if running kube-apiserver; then
    echo; kc get nodes -o wide 2>&1 || true
    echo; kc get pods -A -o wide 2>&1 || true
  fi
  echo; echo "kubeconfig: ${KUBECONFIG_ADMIN}"
}

cmd_logs() {
  local name="${1:?usage: cluster.sh logs NAME [-f]}"
  local file="${LOGS}/${name}.log"
  [[ -f "${file}" ]] || die "no log for '${name}'; have: $(ls "${LOGS}" 2>/dev/null | sed 's/\.log$//' | tr '\n' ' ')"
  if [[ "${2:-}" == "-f" ]]; then tail -n 200 -f "${file}"; else tail -n 200 "${file}"; fi
}

# One up/down at a time (several engineers' scripts may call `up`).
lock() {
  mkdir -p "${MSERVE_CACHE}"
  exec 9>"${MSERVE_CACHE}/cluster.lock"
  if ! flock -n 9; then
    log "waiting for another hack/cluster.sh up/down to finish..."
    flock 9
  fi
}

main() {
  local cmd="${1:-}"; shift || true
  case "${cmd}" in up | down) lock ;; esac
  case "${cmd}" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    logs) cmd_logs "$@" ;;
    kubeconfig) echo "${KUBECONFIG_ADMIN}" ;;
    kubectl) kc "$@" ;;
    *) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
