"""Atomic file writes: a temporary file in the same folder, then a rename.

A crash mid-write leaves the previous file (or none), never a half-written one that looks complete.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    return _atomic(path, lambda f: torch.save(obj, f), "wb")


def write_bytes(data: bytes, path: str | Path) -> Path:
    return _atomic(path, lambda f: f.write(data), "wb")


def write_text(text: str, path: str | Path) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)
