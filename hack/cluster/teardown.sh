# shellcheck shell=bash
# Host teardown of this machine's cluster: stop what `up` started (by recorded pid), container
# shims, kube-proxy's and the kubelet's iptables rules, mounts, pod cgroups, network devices
# and state. Sourced by hack/cluster.sh, which defines the layout, COMPONENTS and the process
# helpers (step, stop, running, ctr).

teardown_network() {
  ip route del unreachable "${POD_CIDR}" 2>/dev/null || true
  ip link del "${BRIDGE}" 2>/dev/null || true
  ip link del "${DUMMY}" 2>/dev/null || true
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
    if [[ "${cmdline}" == *containerd-shim-runc-v2*"-address ${CONTAINERD_SOCK}"* ]]; then
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

clean_ipsets() { # kube-router's sets, once no rule refers to them any more
  command -v ipset >/dev/null || return 0
  local set
  for set in $(ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router)' || true); do
    ipset destroy "${set}" 2>/dev/null || log "    could not destroy ipset ${set}"
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
  local i name
  # The rest in the reverse order of their start.
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name="${COMPONENTS[i]}"
    [[ "${name}" == kubelet || "${name}" == kube-proxy ]] && continue
    step "stop ${name}" stop "${name}"
  done
  step "unmount" unmount_under "${VAR_DIR}" "${RUN_DIR}"
  step "remove pod cgroups" remove_cgroups
  step "remove network devices" teardown_network
  step "remove iptables chains (kubelet, kube-proxy, kube-router)" clean_iptables
  step "remove kube-router's ipsets" clean_ipsets
  step "remove state" remove_state
}

stop_kube_proxy() {
  stop kube-proxy
  local kp; kp="$(bin kube-proxy "${K8S_VERSION}")"
  if [[ -x "${kp}" ]] && iptables -t nat -S KUBE-SERVICES >/dev/null 2>&1; then
    "${kp}" --cleanup >/dev/null 2>&1 || true
  fi
}

# State of an earlier cluster none of whose processes runs any more (they were killed, or the
# machine was handed on): mounts, devices and data of a dead cluster, cleaned before a new up.
stale_state() {
  [[ -d "${STATE}" || -d "${VAR_DIR}" || -d "${RUN_DIR}" ]] || return 1
  local name
  for name in "${COMPONENTS[@]}"; do
    if running "${name}"; then return 1; fi
  done
}
