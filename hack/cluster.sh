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
# Layout: binaries in ${MSERVE_CACHE}/bin, cluster state (pki, kubeconfigs, etcd, logs, pids)
# in ${MSERVE_CACHE}/cluster, runtime state of containerd/kubelet in /var/lib/mserve and
# /run/mserve. Networks: pods 10.244.0.0/24 on bridge cni0, services 10.96.0.0/16 routed on
# the local device mserve0 (dummy, or a portless bridge), which also carries the node's address 10.200.0.1.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck disable=SC1091  # versions.env, beside this script
source "${HACK_DIR}/versions.env"

MSERVE_CACHE="${MSERVE_CACHE:-$HOME/.cache/mserve}"
BIN_DIR="${MSERVE_CACHE}/bin"
STATE="${MSERVE_CACHE}/cluster"
PKI="${STATE}/pki"
LOGS="${STATE}/logs"
PIDS="${STATE}/pids"
VAR_DIR="/var/lib/mserve"
RUN_DIR="/run/mserve"
CONTAINERD_SOCK="${RUN_DIR}/containerd/containerd.sock"
KUBECONFIG_ADMIN="${STATE}/admin.kubeconfig"

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

bin() { echo "${BIN_DIR}/$1-$2"; }
KUBECTL="$(bin kubectl "${K8S_VERSION}")"
CTR="$(bin ctr "${CONTAINERD_VERSION}")"

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

# ctr on the cluster's containerd; its cgroup v1 deprecation warnings are dropped, errors kept.
ctr() {
  local rc=0 err
  err="$(mktemp)"
  "${CTR}" -a "${CONTAINERD_SOCK}" "$@" 2>"${err}" || rc=$?
  grep -v 'DEPRECATION: The support for cgroup v1' "${err}" >&2 || true
  rm -f "${err}"
  return "${rc}"
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

# ---------------------------------------------------------------- preflight + network
# Debian packages the cluster needs (a fresh machine or CI has none of them): command -> package
DEBIAN_PACKAGES="openssl:openssl ip:iproute2 iptables:iptables runc:runc curl:curl conntrack:conntrack
flock:util-linux sysctl:procps dockerd:docker.io debootstrap:debootstrap /usr/lib/cni/bridge:containernetworking-plugins"

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

teardown_network() {
  ip route del unreachable "${POD_CIDR}" 2>/dev/null || true
  ip link del "${BRIDGE}" 2>/dev/null || true
  ip link del "${DUMMY}" 2>/dev/null || true
}

# ---------------------------------------------------------------- certificates and kubeconfigs
CERT_CNF="[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused"

# cert NAME SUBJECT [SANS] [CA]: key + certificate signed by CA (default: ca)
cert() {
  local name="$1" subj="$2" sans="${3:-}" ca="${4:-ca}"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "${PKI}/${name}.key" 2>/dev/null
  local ext=(-addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=critical,digitalSignature,keyEncipherment"
             -addext "extendedKeyUsage=serverAuth,clientAuth")
  [[ -n "${sans}" ]] && ext+=(-addext "subjectAltName=${sans}")
  openssl req -x509 -new -config <(echo "${CERT_CNF}") -key "${PKI}/${name}.key" -subj "${subj}" -days 3650 \
    -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" "${ext[@]}" -out "${PKI}/${name}.crt" 2>/dev/null
}

ca() { # NAME CN
  [[ -f "${PKI}/$1.crt" ]] && return 0
  openssl ecparam -name prime256v1 -genkey -noout -out "${PKI}/$1.key" 2>/dev/null
  openssl req -x509 -new -config <(echo "${CERT_CNF}") -key "${PKI}/$1.key" -subj "/CN=$2" -days 3650 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    -out "${PKI}/$1.crt" 2>/dev/null
}

# kubeconfig NAME CERT: a kubeconfig for client certificate pki/CERT.{crt,key}
kubeconfig() {
  local file="${STATE}/$1.kubeconfig" crt="$2"
  [[ -f "${file}" ]] && return 0
  cat >"${file}" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: mserve
  cluster:
    server: https://127.0.0.1:${APISERVER_PORT}
    certificate-authority-data: $(base64 -w0 "${PKI}/ca.crt")
users:
- name: $1
  user:
    client-certificate-data: $(base64 -w0 "${PKI}/${crt}.crt")
    client-key-data: $(base64 -w0 "${PKI}/${crt}.key")
contexts:
- name: mserve
  context: {cluster: mserve, user: $1}
current-context: mserve
EOF
  chmod 600 "${file}"
}

make_pki() {
  mkdir -p "${PKI}" && chmod 700 "${PKI}"
  ca ca kubernetes-ca
  ca front-proxy-ca front-proxy-ca
  local api_sans="DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:${NODE_IP},IP:${KUBERNETES_SVC_IP}"
  cert apiserver "/CN=kube-apiserver" "${api_sans}"
  cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  cert front-proxy-client "/CN=front-proxy-client" "" front-proxy-ca
  cert admin "/O=system:masters/CN=kubernetes-admin"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert kube-proxy "/CN=system:kube-proxy"
  cert kubelet-client "/O=system:nodes/CN=system:node:${NODE_NAME}"
  cert kubelet-server "/O=system:nodes/CN=system:node:${NODE_NAME}" "DNS:${NODE_NAME},DNS:localhost,IP:${NODE_IP},IP:127.0.0.1"
  if [[ ! -f "${PKI}/sa.key" ]]; then
    openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  fi
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kube-proxy kube-proxy
  kubeconfig kubelet kubelet-client
  log "    certificates (openssl, EC P-256) and kubeconfigs in ${STATE}"
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
  write_config "${dir}/config.toml" containerd <<EOF
version = 3
root = "${VAR_DIR}/containerd"
state = "${RUN_DIR}/containerd"

[grpc]
  address = "${CONTAINERD_SOCK}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "${PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  enable_selinux = false
  netns_mounts_under_state_dir = true
  # Root here lacks CAP_SYS_RESOURCE (not in the bounding set), so no process may lower its
  # oom_score_adj: clamp containers' values to containerd's own instead of failing runc.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "${RUN_DIR}/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "${dir}/cni"
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
EOF
  write_config "${dir}/cni/10-mserve-bridge.conflist" none <<EOF
{
  "cniVersion": "1.0.0",
  "name": "mserve",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "${BRIDGE}",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "${NODE_POD_CIDR}", "gateway": "${POD_GATEWAY}" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "${VAR_DIR}/cni/networks"
      }
    },
    { "type": "loopback" }
  ]
}
EOF
  PATH="${dir}/bin:${PATH}" start containerd "$(bin containerd "${CONTAINERD_VERSION}")" --config "${dir}/config.toml"
  wait_for 60 "containerd socket" ctr version
}

load_images() {
  local image tar
  for image in "${PAUSE_IMAGE}" "${COREDNS_IMAGE}" "${METRICS_SERVER_IMAGE}"; do
    if ctr -n k8s.io images ls -q | grep -x "${image}" >/dev/null; then continue; fi
    tar="$("${HACK_DIR}/docker-images.sh" addon-tar "${image}")"
    ctr -n k8s.io images import --local "${tar}" >/dev/null
    log "    imported ${image}"
  done
}

start_kubelet() {
  local dir="${STATE}/kubelet"
  mkdir -p "${dir}" "${VAR_DIR}/kubelet" "${VAR_DIR}/pod-logs"
  write_config "${dir}/config.yaml" kubelet <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "${PKI}/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "${PKI}/kubelet-server.crt"
tlsPrivateKeyFile: "${PKI}/kubelet-server.key"
containerRuntimeEndpoint: "unix://${CONTAINERD_SOCK}"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDomain: cluster.local
clusterDNS: ["${DNS_SVC_IP}"]
podCIDR: "${NODE_POD_CIDR}"
podLogsDir: "${VAR_DIR}/pod-logs"
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
serializeImagePulls: false
# No registry here: imported images must never be garbage-collected.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
maxPods: 110
EOF
  start kubelet "$(bin kubelet "${K8S_VERSION}")" \
    --config="${dir}/config.yaml" --kubeconfig="${STATE}/kubelet.kubeconfig" \
    --root-dir="${VAR_DIR}/kubelet" --hostname-override="${NODE_NAME}" --node-ip="${NODE_IP}" --v=1
  wait_for 60 "kubelet /healthz" curl -sf http://127.0.0.1:10248/healthz
}

start_kube_proxy() {
  local dir="${STATE}/kube-proxy"
  mkdir -p "${dir}"
  write_config "${dir}/config.yaml" kube-proxy <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: "${STATE}/kube-proxy.kubeconfig"}
mode: iptables
clusterCIDR: "${POD_CIDR}"
hostnameOverride: "${NODE_NAME}"
bindAddress: "${NODE_IP}"
healthzBindAddress: "127.0.0.1:10256"
metricsBindAddress: "127.0.0.1:10249"
conntrack: {maxPerCore: 0}
nodePortAddresses: ["primary"]
EOF
  start kube-proxy "$(bin kube-proxy "${K8S_VERSION}")" --config="${dir}/config.yaml" --v=1
  wait_for 60 "kube-proxy /healthz" curl -sf http://127.0.0.1:10256/healthz
}

node_ready() {
  [[ "$(kc get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

apply_addons() {
  local f
  for f in "${HACK_DIR}/addons/"*.yaml; do
    echo "---"
    sed -e "s|@COREDNS_IMAGE@|${COREDNS_IMAGE}|g" -e "s|@METRICS_SERVER_IMAGE@|${METRICS_SERVER_IMAGE}|g" \
        -e "s|@DNS_SVC_IP@|${DNS_SVC_IP}|g" "${f}"
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
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler; do
    pid="$(pid_of "${name}" 2>/dev/null)" || continue
    running "${name}" || continue
    mib="$(rss_mib "${pid}")"; total=$((total + mib)); line+=" ${name}=${mib}MiB"
  done
  log "control-plane resident memory: ${total} MiB (${line# })"
  line=""
  for name in containerd kubelet kube-proxy; do
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
    step "build binaries (cached in ${BIN_DIR})" "${HACK_DIR}/build.sh" control-plane node addons
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
    step "add-on images (pause, coredns, metrics-server)" addon_images
    step "containerd" start_containerd
    step "import images into containerd" load_images
    step "kubelet" start_kubelet
    step "kube-proxy (iptables)" start_kube_proxy
    step "node ${NODE_NAME} Ready" wait_for 120 "node Ready" node_ready
    step "add-ons: coredns, metrics-server" apply_addons
  fi
  log ""
  log "cluster up in $(elapsed "${t0}")s"
  log "server version: $(kc version -o json | awk -F'"' '/"gitVersion"/ { v = $4 } END { print v }')"
  memory_report
  log "kubeconfig: ${KUBECONFIG_ADMIN}"
  log "  export KUBECONFIG=${KUBECONFIG_ADMIN}"
}

cleanup_containers() {
  # Kill every container task and let containerd remove it; shims exit with their last task.
  if running containerd; then
    local id
    for id in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -n k8s.io tasks kill -a -s SIGKILL "${id}" >/dev/null 2>&1 || true
    done
    for id in $(ctr -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -n k8s.io tasks delete -f "${id}" >/dev/null 2>&1 || true
    done
  fi
  # Shims that are still there: containerd recorded their pids in each bundle.
  local f pid
  while IFS= read -r f; do
    pid="$(cat "${f}" 2>/dev/null)" || continue
    if [[ -n "${pid}" && -d "/proc/${pid}" ]]; then kill -KILL "${pid}" 2>/dev/null || true; log "    killed shim ${pid}"; fi
  done < <(find "${RUN_DIR}/containerd" -name shim.pid 2>/dev/null)
  # A shim whose bundle is already gone (its task was deleted but the shim lingered) has no
  # shim.pid left; it still names our containerd's own socket, which no one else's process does.
  local cmdline
  for f in /proc/[0-9]*/cmdline; do
    cmdline="$(tr '\0' ' ' < "${f}" 2>/dev/null)" || continue
    if [[ "${cmdline}" == *containerd-shim-runc-v2*"-address ${RUN_DIR}/containerd/containerd.sock"* ]]; then
      pid="${f#/proc/}"; pid="${pid%/cmdline}"
      kill -KILL "${pid}" 2>/dev/null || true; log "    killed lingering shim ${pid}"
    fi
  done
}

unmount_under() { # DIR...: unmount everything mounted below the given directories, deepest first
  local dir mp
  for dir in "$@"; do
    while IFS= read -r mp; do
      umount "${mp}" 2>/dev/null || umount -l "${mp}" 2>/dev/null || log "    could not unmount ${mp}"
    done < <(awk -v d="${dir}/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  done
}

remove_cgroups() { # kubelet's pod cgroups (cgroup v1, cgroupfs driver)
  local root
  for root in /sys/fs/cgroup/*/; do
    [[ -d "${root}kubepods" ]] || continue
    find "${root}kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

clean_iptables() { # every KUBE-* chain and the jumps to them (kubelet's canaries/firewall, kube-proxy)
  local cmd table rule chain
  for cmd in iptables ip6tables; do
    command -v "${cmd}" >/dev/null || continue
    for table in filter nat mangle; do
      while IFS= read -r rule; do
        eval "${cmd} -t ${table} -D ${rule#-A }" 2>/dev/null || true
      done < <("${cmd}" -t "${table}" -S 2>/dev/null | grep -E '^-A (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING) .*-j KUBE-' || true)
      for chain in $("${cmd}" -t "${table}" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
        "${cmd}" -t "${table}" -F "${chain}" 2>/dev/null || true
      done
      for chain in $("${cmd}" -t "${table}" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
        "${cmd}" -t "${table}" -X "${chain}" 2>/dev/null || true
      done
    done
  done
}

remove_state() {
  # Renamed away at once, deleted in the background: containerd's snapshots of big images
  # take a minute to delete on this disk, and nothing needs to wait for that.
  local dir old trash=()
  for dir in "${STATE}" "${VAR_DIR}" "${RUN_DIR}"; do
    # (including what an earlier, interrupted deletion left)
    for old in "${dir}".deleting.*; do [[ -e "${old}" ]] && trash+=("${old}"); done
    [[ -e "${dir}" ]] || continue
    mv "${dir}" "${dir}.deleting.$$" && trash+=("${dir}.deleting.$$")
  done
  ((${#trash[@]} == 0)) || (setsid rm -rf "${trash[@]}" </dev/null >/dev/null 2>&1 9>&- &)
  log "    removed ${STATE}, ${VAR_DIR}, ${RUN_DIR}"
}

teardown() {
  step "stop kubelet" stop kubelet
  step "stop containers" cleanup_containers
  step "stop kube-proxy, clean its rules" stop_kube_proxy
  local name
  for name in containerd kube-scheduler kube-controller-manager kube-apiserver etcd; do
    step "stop ${name}" stop "${name}"
  done
  step "unmount" unmount_under "${VAR_DIR}" "${RUN_DIR}"
  step "remove pod cgroups" remove_cgroups
  step "remove network devices" teardown_network
  step "remove iptables chains (kubelet, kube-proxy)" clean_iptables
  step "remove state" remove_state
}

# State of an earlier cluster none of whose processes runs any more (they were killed, or the
# machine was handed on): mounts, devices and data of a dead cluster, cleaned before a new up.
stale_state() {
  [[ -d "${STATE}" || -d "${VAR_DIR}" || -d "${RUN_DIR}" ]] || return 1
  local name
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if running "${name}"; then return 1; fi
  done
}

cmd_down() {
  local t0; t0="$(now)"
  teardown
  log "cluster down in $(elapsed "${t0}")s (binaries and images stay cached in ${MSERVE_CACHE})"
}

stop_kube_proxy() {
  stop kube-proxy
  local kp; kp="$(bin kube-proxy "${K8S_VERSION}")"
  if [[ -x "${kp}" ]] && iptables -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    "${kp}" --cleanup >/dev/null 2>&1 || true
  fi
}

cmd_status() {
  local name pid
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
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
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
