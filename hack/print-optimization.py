"""Print a ModelService's status.optimization (JSON on stdin) as an aligned summary."""

from __future__ import annotations

import json
import sys


def summary_lines(record: dict) -> list[str]:
    """One `key  value` line per field, nested fields flattened with dots."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    walk("", record)
    width = max((len(k) for k in flat), default=0)
    return [f"  {key:<{width}}  {value}" for key, value in flat.items()]


def main() -> None:
    text = sys.stdin.read().strip()
    if not text:
        print("  (no optimization recorded: the model was served as it is)")
        return
    print("\n".join(summary_lines(json.loads(text))))


if __name__ == "__main__":
    main()
