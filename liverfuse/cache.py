"""Atomic, content-addressed on-disk cache.

Everything expensive (generated phantom, preprocessed images, features) is written
through :func:`atomic_write` so that an interrupted run never leaves a half-written
file that a later run would trust, and read back through :func:`load_npz`, which
treats a damaged file as a miss (it is deleted and recomputed).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def digest(*parts: Any, length: int = 16) -> str:
    """Stable short SHA-256 of JSON-serialisable parts (dicts sorted by key)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, (bytes, bytearray, memoryview)):
            h.update(bytes(part))
        elif isinstance(part, np.ndarray):
            h.update(str(part.dtype).encode() + str(part.shape).encode())
            h.update(memoryview(np.ascontiguousarray(part)).cast("B"))  # no copy of large arrays
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()[:length]


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """SHA-256 of a file's bytes (``alg:hex`` is not needed: always sha256)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; rename it over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays atomically as an uncompressed ``.npz``."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_npz(path: str | os.PathLike, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray] | None:
    """Read a cached ``.npz``; ``None`` if missing. A damaged file is removed and ``None`` returned."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        if any(k not in out for k in keys):
            raise ValueError(f"missing keys {set(keys) - set(out)}")
        return out
    except Exception:  # truncated zip, bad CRC, wrong content: never trust it
        path.unlink(missing_ok=True)
        return None
