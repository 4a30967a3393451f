#!/usr/bin/env bash
# Call a ModelService's Service with one digits sample: print the curl command and its answer.
#   hack/infer.sh NAMESPACE NAME SAMPLES.npz
# The host reaches ClusterIPs on this machine's cluster (kube-proxy's OUTPUT rules); on
# other clusters (kind, remote) the call goes through `kubectl port-forward`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ns="$1" name="$2" samples="$3"
PYTHON="${PYTHON:-.venv/bin/python}"
ip="$(kubectl -n "${ns}" get svc "${name}" -o jsonpath='{.spec.clusterIP}')"
port="$(kubectl -n "${ns}" get svc "${name}" -o jsonpath='{.spec.ports[?(@.name=="http")].port}')"
base="http://${ip}:${port:-8080}"
if ! curl -sf --max-time 3 "${base}/v2/health/ready" >/dev/null 2>&1; then
  local_port="$("${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  kubectl -n "${ns}" port-forward "svc/${name}" "${local_port}:${port:-8080}" >/dev/null 2>&1 &
  forward=$!
  trap 'kill ${forward} 2>/dev/null || true' EXIT
  base="http://127.0.0.1:${local_port}"
  for _ in $(seq 1 50); do curl -sf --max-time 1 "${base}/v2/health/ready" >/dev/null 2>&1 && break; sleep 0.2; done
fi
body="$("${PYTHON}" hack/digits_request.py body "${samples}")"
url="${base}/v2/models/${name}/infer"
echo "curl -s ${url} -H 'Content-Type: application/json' -d '${body}'"
answer="$(curl -sf --max-time 10 "${url}" -H 'Content-Type: application/json' -d "${body}")"
echo "${answer}"
echo "$("${PYTHON}" hack/digits_request.py read "${answer}"), true label $("${PYTHON}" hack/digits_request.py label "${samples}")"
