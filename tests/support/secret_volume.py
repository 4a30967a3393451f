"""Write a directory the way the kubelet writes a Secret volume, so rotation is tested as it happens.

The kubelet's atomic writer puts the files in a new hidden directory `..<timestamp>`, swaps
the `..data` link to it in one rename, and keeps a visible link per key (`key -> ..data/key`).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path


def write_secret(volume: Path, data: dict[str, bytes | str]) -> None:
    """Make `volume` hold exactly `data` (file name -> content), swapped in atomically."""
    volume.mkdir(parents=True, exist_ok=True)
    stamp = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for name, value in data.items():
        (stamp / name).write_bytes(value.encode() if isinstance(value, str) else value)
    link = volume / "..data_tmp"
    link.symlink_to(stamp.name)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    os.replace(link, volume / "..data")
    for name in data:
        if not (volume / name).is_symlink():
            (volume / name).symlink_to(Path("..data") / name)
    for entry in volume.iterdir():
        if entry.is_symlink() and entry.name not in data and not entry.name.startswith(".."):
            entry.unlink()
    if old is not None:
        shutil.rmtree(volume / old)
