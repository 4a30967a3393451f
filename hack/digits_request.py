"""V2 inference request bodies from the digits samples, and the reading of an answer.

python hack/digits_request.py body SAMPLES.npz [INDEX]   -> one-line JSON request
python hack/digits_request.py label SAMPLES.npz [INDEX]  -> the sample's true digit
python hack/digits_request.py read ANSWER_JSON           -> "predicted digit N"
"""

from __future__ import annotations

import json
import sys

import numpy as np


def request_body(samples_path: str, index: int = 0, input_name: str = "x") -> str:
    """One held-out digit as a V2 JSON request."""
    x = np.load(samples_path)[input_name][index : index + 1]
    data = x.flatten().round(4).tolist()
    tensor = {"name": input_name, "shape": list(x.shape), "datatype": "FP32", "data": data}
    return json.dumps({"inputs": [tensor]}, separators=(",", ":"))


def true_label(samples_path: str, index: int = 0) -> int:
    return int(np.load(samples_path)["label"][index])


def predicted_digit(answer: str) -> int:
    logits = json.loads(answer)["outputs"][0]["data"]
    return int(np.argmax(logits))


def main() -> None:
    command, argument, *rest = sys.argv[1:]
    index = int(rest[0]) if rest else 0
    if command == "body":
        print(request_body(argument, index))
    elif command == "label":
        print(true_label(argument, index))
    elif command == "read":
        print(f"predicted digit {predicted_digit(argument)}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
