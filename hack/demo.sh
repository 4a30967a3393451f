#!/usr/bin/env bash
# `make demo`: mserve without a cluster. Trains the digits model (examples/digits), serves
# its ONNX export with `mserve serve` on a free port, prints a curl command and its answer,
# then stops the server.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
MSERVE="$(dirname "${PYTHON}")/mserve"
OUT="${MSERVE_DEMO_DIR:-out/demo}"

say() { printf '\n==> %s\n' "$*"; }

if [[ ! -f "${OUT}/model.onnx" ]]; then
  say "training the digits model (scikit-learn's bundled data, a few seconds)"
  "${PYTHON}" examples/digits/train.py --out "${OUT}"
fi

port="$("${PYTHON}" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
say "serving ${OUT}/model.onnx on http://127.0.0.1:${port} (log: ${OUT}/serve.log)"
"${MSERVE}" serve "${OUT}/model.onnx" --name digits --host 127.0.0.1 --port "${port}" --grpc-port 0 \
  >"${OUT}/serve.log" 2>&1 &
server=$!
trap 'kill "${server}" 2>/dev/null; wait "${server}" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:${port}/v2/health/ready" >/dev/null && break
  kill -0 "${server}" 2>/dev/null || { cat "${OUT}/serve.log"; echo "server exited" >&2; exit 1; }
  sleep 0.5
done
curl -sf "http://127.0.0.1:${port}/v2/health/ready" >/dev/null || { cat "${OUT}/serve.log"; exit 1; }

# One held-out digit as a V2 request; its true label is printed next to the answer.
body="$("${PYTHON}" hack/digits_request.py body "${OUT}/samples.npz")"
url="http://127.0.0.1:${port}/v2/models/digits/infer"
say "a V2 inference request:"
echo "curl -s ${url} -H 'Content-Type: application/json' -d '${body}'"
answer="$(curl -sf "${url}" -H 'Content-Type: application/json' -d "${body}")"
say "answer:"
echo "${answer}"
echo "$("${PYTHON}" hack/digits_request.py read "${answer}"), true label $("${PYTHON}" hack/digits_request.py label "${OUT}/samples.npz")"
say "stopping the server"
