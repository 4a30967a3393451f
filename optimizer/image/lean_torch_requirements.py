"""Print the optimizer image's requirements: mserve's and its `optimizer` extra's, without torch,
plus the torch wheel's own requirements minus what CPU-only conversion never loads.

PyPI's torch for Linux is the CUDA build. Its shared libraries link against cuBLAS, cuDNN,
NCCL, ... at load time, so `import torch` needs those libraries present even on a CPU, but
not Triton (torch.compile only), cuda-bindings, cuSOLVER or NVTX (loaded lazily). Run after
`pip install --no-deps torch`; used by optimizer/Dockerfile.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import requires
from pathlib import Path

DROPPED_PACKAGES = ("triton", "cuda-bindings")
DROPPED_TOOLKIT_PARTS = {"cusolver", "nvtx"}


def extra_requirements(pyproject: Path, extra: str) -> list[str]:
    """The extra's requirements with `mserve[other]` references expanded."""
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    result: list[str] = []
    for requirement in extras[extra]:
        nested = re.fullmatch(r"mserve\[(.+)\]", requirement)
        if nested:
            for name in nested.group(1).split(","):
                result += extra_requirements(pyproject, name.strip())
        else:
            result.append(requirement)
    return result


def torch_runtime_requirements() -> list[str]:
    """The installed torch's requirements that `import torch` on a CPU still needs."""
    result = []
    for requirement in requires("torch") or []:
        if "extra ==" in requirement or requirement.startswith(DROPPED_PACKAGES):
            continue
        requirement = requirement.split(";")[0].strip()
        toolkit = re.fullmatch(r"cuda-toolkit\[(.*)\](.*)", requirement)
        if toolkit:
            parts = [p for p in toolkit.group(1).split(",") if p not in DROPPED_TOOLKIT_PARTS]
            requirement = f"cuda-toolkit[{','.join(parts)}]{toolkit.group(2)}"
        result.append(requirement)
    return result


def main() -> None:
    pyproject = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    base = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    own = [r for r in base + extra_requirements(pyproject, "optimizer") if not r.startswith("torch")]
    print("\n".join(own + torch_runtime_requirements()))


if __name__ == "__main__":
    main()
