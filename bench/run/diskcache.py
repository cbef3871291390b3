"""The cells' caches: fitted images and frozen-trunk features, in memory for one process and, with
`--cache-dir`, on disk for every worker, node and later run that shares the folder.

A disk entry is one safetensors file named by the hash of its key, which holds the dataset's content hash
(not only its arguments), the backbone and its weights, the preprocessing and the precision. It carries the
key and the tensor's sha256 in its metadata; an entry that is partial, corrupt or for another key is
recomputed and rewritten, never trusted. Writes go to a temporary file renamed into place, so readers see
a whole file or none; a write that fails (a full disk) keeps the entry in memory, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

Made = tuple[torch.Tensor, dict]  # the tensor and JSON-safe facts about it (a conversion record, a timing)


class Caches(dict):
    """A grid's in-memory caches (a dict, as before), optionally backed by a folder on disk."""

    def __init__(self, directory: str | Path | None = None):
        super().__init__()
        self.directory = Path(directory) if directory else None
        self.writable = True  # False after a failed write (a full disk): memory only from then on, warned once


def content_hash(images: np.ndarray, labels: np.ndarray) -> str:
    """What the data is, not where it came from: a changed file under the same root is a new key."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).view(np.uint8).reshape(-1).data)
    digest.update(np.ascontiguousarray(labels).astype(np.int64).data)
    return digest.hexdigest()


def cached_tensor(caches: dict, key: tuple, make: Callable[[], Made], content: Callable[[], str] | None = None) -> Made:
    """`caches[key]`, else the disk entry for (key, content), else `make()` stored in both."""
    if key in caches:
        return caches[key]
    directory = getattr(caches, "directory", None)
    if directory is None:
        caches[key] = make()
        return caches[key]
    full = json.dumps([list(map(str, key)), content() if content else None])
    path = directory / (hashlib.sha256(full.encode()).hexdigest()[:32] + ".safetensors")
    value = _load(path, full)
    if value is None:
        value = make()
        if getattr(caches, "writable", True):
            _save_or_fall_back(caches, path, full, value)
    caches[key] = value
    return value


def _save_or_fall_back(caches: dict, path: Path, full: str, value: Made) -> None:
    """The disk cache is an optimisation: a write that fails (a full disk, a read-only folder) leaves the entry in
    memory, warns once, and stops this process writing to the folder; the cell goes on."""
    from safetensors import SafetensorError

    try:
        _save(path, full, value)
    except (OSError, SafetensorError) as exc:
        caches.writable = False
        message = " ".join(str(exc).split())
        warnings.warn(
            f"{path.parent}: cannot write the feature cache ({type(exc).__name__}: {message}); "
            "keeping it in memory for the rest of this run (free space, or pass --cache-dir DIR or --no-disk-cache)",
            stacklevel=2,
        )


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def _load(path: Path, full: str) -> Made | None:
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensor = f.get_tensor("value")
        if meta.get("key") != full or meta.get("sha256") != _digest(tensor):
            raise ValueError("key or checksum mismatch")
        return tensor, json.loads(meta["facts"])
    except Exception as exc:  # partial, corrupt, or another key: recompute, never trust it
        warnings.warn(f"{path}: cache entry unreadable or not what its name says ({type(exc).__name__}: {exc}); recomputing it", stacklevel=2)
        return None


def _save(path: Path, full: str, value: Made) -> None:
    from safetensors.torch import save_file

    tensor, facts = value
    tensor = tensor.detach().cpu().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(handle)
    try:
        save_file({"value": tensor}, tmp, metadata={"key": full, "sha256": _digest(tensor), "facts": json.dumps(facts)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
