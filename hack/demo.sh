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
read -r body label < <("${PYTHON}" - "${OUT}/samples.npz" <<'PY'
import json, sys
import numpy as np
samples = np.load(sys.argv[1])
x = samples["x"][:1]
request = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().round(4).tolist()}]}
print(json.dumps(request, separators=(",", ":")), int(samples["label"][0]))
PY
)
url="http://127.0.0.1:${port}/v2/models/digits/infer"
say "a V2 inference request:"
echo "curl -s ${url} -H 'Content-Type: application/json' -d '${body}'"
answer="$(curl -sf "${url}" -H 'Content-Type: application/json' -d "${body}")"
say "answer:"
echo "${answer}"
"${PYTHON}" -c '
import json, sys
logits = json.loads(sys.argv[1])["outputs"][0]["data"]
print(f"predicted digit {max(range(len(logits)), key=logits.__getitem__)}, true label {sys.argv[2]}")
' "${answer}" "${label}"
say "stopping the server"
