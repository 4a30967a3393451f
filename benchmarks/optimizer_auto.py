"""`--quantize auto` against the fp32 original and onnxruntime's plain dynamic quantization, one run.

Every variant is a file; all are opened with the optimizer's own session settings and timed
in the same alternating rounds (the optimizer's `alternating_medians`), so that load on a
shared machine hits each alike and the ratios to fp32 are read from the same rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

BATCHES = (1, 32)


def _plain_dynamic(source: Path, dest: Path, per_channel: bool) -> Path:
    """What a user gets from onnxruntime's tool with its defaults: no mserve choices involved."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, dest, weight_type=QuantType.QInt8, per_channel=per_channel)
    return dest


def _inputs(model: dict) -> dict[str, np.ndarray]:
    """The samples file's arrays that are model inputs (the digits file also holds labels)."""
    import onnx

    names = {i.name for i in onnx.load(str(model["paths"]["onnx"]), load_external_data=False).graph.input}
    return {name: array for name, array in np.load(model["paths"]["samples"]).items() if name in names}


def _feeds(model: dict, batch: int) -> dict[str, np.ndarray]:
    data = _inputs(model)
    count = next(iter(data.values())).shape[0]
    index = np.arange(batch) % count
    return {name: array[index] for name, array in data.items()}


def _cosines(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    a, b = reference.reshape(len(reference), -1), other.reshape(len(other), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def compare_auto(model: dict, workdir: Path, run: Callable, budget: float) -> dict:
    """Optimize with auto, make the plain variants, and time them all against fp32 together."""
    from mserve_optimizer.latency import alternating_medians
    from mserve_optimizer.ort_session import open_session

    folder = workdir / f"plain-{model['name'].split()[0].lower()}-{len(model['name'])}"
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(model["paths"]["onnx"])
    row = run(model, "auto", workdir / "artifacts", latency_batch=BATCHES[-1])
    variants = {"fp32 original": source}
    if row["artifact"] is not None:
        variants[f"auto: {row['report'].chosen.split(' (')[0]}"] = Path(row["artifact"])
    variants["plain quantize_dynamic per-channel"] = _plain_dynamic(source, folder / "pc.onnx", True)
    variants["plain quantize_dynamic per-tensor"] = _plain_dynamic(source, folder / "pt.onnx", False)
    sessions = {name: open_session(path) for name, path in variants.items()}
    everything = _inputs(model)
    reference = sessions["fp32 original"].run(None, everything)[0]
    figures: dict[str, dict] = {name: {} for name in variants}
    for name, session in sessions.items():
        cos = _cosines(reference, session.run(None, everything)[0])
        figures[name].update(
            cos_mean=float(cos.mean()),
            cos_min=float(cos.min()),
            size=variants[name].stat().st_size / source.stat().st_size,
        )
    for batch in BATCHES:
        medians = alternating_medians(list(sessions.values()), _feeds(model, batch), budget_s=budget)
        for name, ms in zip(sessions, medians, strict=True):
            figures[name][batch] = ms
    if model["digits"]:
        _, x, y = model["digits"]
        for name, session in sessions.items():
            figures[name]["accuracy"] = float((session.run(None, {"x": x})[0].argmax(1) == y).mean())
    return {"model": model["name"], "figures": figures, "report": row["report"], "seconds": row["seconds"]}


def print_auto_table(compared: list[dict]) -> None:
    print("| model | variant | size | b1 ms | b1 vs fp32 | b32 ms | b32 vs fp32 | quality |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for entry in compared:
        figures = entry["figures"]
        base = figures["fp32 original"]
        for name, f in figures.items():
            ratios = [f"{base[b] / f[b]:.2f}x" for b in BATCHES]
            quality = (
                f"acc {f['accuracy']:.4f}"
                if "accuracy" in f
                else f"cos {f['cos_mean']:.4f} / {f['cos_min']:.4f}"
            )
            print(
                f"| {entry['model']} | {name} | {f['size']:.2f} | {f[1]:.3f} | {ratios[0]} | "
                f"{f[32]:.2f} | {ratios[1]} | {quality} |"
            )
    print()
    for entry in compared:
        report = entry["report"]
        print(f"- {entry['model']} auto ({entry['seconds']:.0f}s): {report.chosen}")
        for c in report.candidates:
            speed = (
                f"b1 {c.speedup_small:.2f}x, b32 {c.speedup_large:.2f}x"
                if c.speedup_small is not None and c.speedup_large is not None
                else "not timed"
            )
            print(
                f"  - {c.name}: {'pass' if c.passed else 'fail'}, {speed}, min cos {c.min_cosine}; {c.note}"
            )
    if compared:
        hardware = compared[0]["report"].hardware
        print(f"\nmeasured on: {hardware.text() if hardware else 'unknown'}")
