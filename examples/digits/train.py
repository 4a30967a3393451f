"""Train a small classifier on scikit-learn's bundled digits and save it the three ways mserve reads.

    python examples/digits/train.py --out out/digits [--arch mlp|cnn]

writes model.pt2 (torch.export, dynamic batch), model.ts (TorchScript), model.onnx, and
samples.npz (the held-out digits: `x` inputs and `label` answers) to validate against:

    mserve optimize out/digits/model.pt2 --input-shape x=-1,64 --quantize dynamic-int8 \\
        --samples out/digits/samples.npz --output out/artifacts

Nothing is downloaded: the digits data ships inside scikit-learn.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

SEED = 0
INPUT_NAME = "x"


def load_split(arch: str = "mlp") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test split of the 1,797 8x8 digits, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    if arch == "cnn":
        x = x.reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED, stratify=y)
    return x_train, x_test, y_train, y_test


def build(arch: str) -> nn.Module:
    if arch == "mlp":
        return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(arch: str = "mlp", epochs: int = 30) -> tuple[nn.Module, float]:
    """A trained model and its accuracy on the held-out digits."""
    torch.manual_seed(SEED)
    # Models this small gain nothing from threads, and lose a lot to them on a busy machine.
    torch.set_num_threads(1)
    x_train, x_test, y_train, y_test = load_split(arch)
    model = build(arch)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x_train), torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(xs), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean())
    return model, accuracy


def save_all(model: nn.Module, arch: str, out: Path) -> dict[str, Path]:
    """model.pt2, model.ts, model.onnx and samples.npz in `out`, all with a dynamic batch axis."""
    out.mkdir(parents=True, exist_ok=True)
    _, x_test, _, y_test = load_split(arch)
    example = torch.from_numpy(x_test[:2])
    paths = {name: out / f"model.{name}" for name in ("pt2", "ts", "onnx")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch")
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(program, paths["pt2"])
        torch.jit.trace(model, example).save(str(paths["ts"]))
        torch.onnx.export(
            model,
            (example,),
            str(paths["onnx"]),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=["logits"],
            dynamic_axes={INPUT_NAME: {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
        )
    paths["samples"] = out / "samples.npz"
    np.savez(paths["samples"], **{INPUT_NAME: x_test, "label": y_test})
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/digits"))
    parser.add_argument("--arch", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    model, accuracy = train(args.arch, args.epochs)
    paths = save_all(model, args.arch, args.out)
    shape = "x=-1,64" if args.arch == "mlp" else "x=-1,1,8,8"
    print(f"{args.arch}: held-out accuracy {accuracy:.4f}")
    for name, path in paths.items():
        print(f"  {name:8s} {path}")
    print(
        f"  optimize: mserve optimize {paths['pt2']} --input-shape {shape} --quantize dynamic-int8 "
        f"--samples {paths['samples']} --output out/artifacts"
    )


if __name__ == "__main__":
    main()
