"""Bring the source model to a local file, name its format, and load an ONNX one.

Fetching is the runtime's code (`mserve_runtime.fetch`): one implementation of s3/http/pvc
for both the serving pods and this Job. The source is read with the source role's
credentials only (MSERVE_SOURCE_*), so a source URI that names the artifact store is never
read with the store's keys; MSERVE_FETCH_MAX_BYTES caps the download.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mserve_optimizer.errors import BadInputError

MODEL_SUFFIXES = (".onnx", ".pt2", ".ts", ".pt", ".pth", ".torchscript")


@dataclass(frozen=True)
class LocalSource:
    """The source model as a local file, with the digest that names it."""

    uri: str
    path: Path
    sha256: str
    size_bytes: int


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _pick_model_file(uri: str, folder: Path) -> Path:
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise BadInputError(
            f"{uri}: a directory source must hold exactly one model file ({', '.join(MODEL_SUFFIXES)}); "
            f"found {names}"
        )
    return found[0]


def fetch_source(uri: str, workdir: Path, *, sha256: str | None = None) -> LocalSource:
    """Resolve `uri` to a local model file, verifying `sha256` when it is pinned."""
    from mserve_runtime.fetch import FetchError, fetch, resolve_local_path
    from mserve_runtime.fetch_limits import max_bytes_from_env

    expected = sha256.lower().removeprefix("sha256:") if sha256 else None
    try:
        if _is_local(uri):
            path = resolve_local_path(uri)
            if not path.exists():
                raise BadInputError(f"{uri}: no such file or directory")
        else:
            path = fetch(uri, workdir / "source", role="source", max_bytes=max_bytes_from_env()).path
    except (FetchError, ValueError) as exc:
        raise BadInputError(str(exc)) from None
    except OSError as exc:
        raise BadInputError(f"{uri}: {exc.strerror or exc}") from None
    if path.is_dir():
        path = _pick_model_file(uri, path)
    try:
        actual = sha256_file(path)
        size = path.stat().st_size
    except OSError as exc:
        raise BadInputError(f"{uri}: cannot read {path}: {exc.strerror or exc}") from None
    if expected is not None and actual != expected:
        raise BadInputError(f"{uri}: sha256 mismatch: expected {expected}, got {actual}")
    if size == 0:
        raise BadInputError(f"{uri}: the file is empty")
    return LocalSource(uri, path, actual, size)


def detect_format(path: Path, requested: str = "auto") -> str:
    """onnx, torchscript or torch-export, from the bytes (the suffix only breaks ties)."""
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise BadInputError(f"{path.name}: unreadable zip archive: {exc}") from None
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names):
            found = "torch-export"
        elif any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            found = "torchscript"
        else:
            raise BadInputError(
                f"{path.name}: a zip archive that is neither TorchScript nor a torch.export program "
                "(a state_dict or a pickled nn.Module cannot be run without its Python class; "
                "save with torch.jit.save or torch.export.save)"
            )
    else:
        found = "onnx"
    if requested not in ("auto", found):
        raise BadInputError(f"{path.name}: --format {requested} but the file is {found}")
    return found


def load_onnx(path: Path):  # -> onnx.ModelProto
    """Parse an ONNX file; anything else is a one-line BadInputError."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=True)
    except (DecodeError, RuntimeError, ValueError, OSError) as exc:
        raise BadInputError(f"{path.name}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not model.graph.node or not model.graph.output:
        raise BadInputError(f"{path.name}: not an ONNX model (no graph nodes or outputs)")
    return model
