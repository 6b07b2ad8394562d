"""Atomic file writes (a temporary file in the same folder, then a rename) and safe checkpoint reads.

A crash mid-write leaves the previous file (or none), never a half-written one that looks complete.
Files get the user's normal permissions (umask), not mkstemp's private 0600. Checkpoints are read
with `weights_only=True`: tensors, numbers, strings and containers, never code. torch is imported by
the two checkpoint functions alone, so the tools that only read records (leaderboards) never load it.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from reid_kd.errors import UserError


FULL_DISK = 16 << 20  # bytes free below which a failed write is taken for a full disk


class UnsafeFileError(UserError, ValueError):
    """A file that is not a checkpoint reid-kd wrote: truncated, corrupt, or asking to run code."""


class DamagedFileError(UnsafeFileError):
    """A file that is truncated or garbage (not one asking to run code): where reid-kd wrote it into a cache, it
    can be moved aside and made anew (`engine/training.py`). The message is `<path> <problem>; <fix>`."""

    def __init__(self, path: str | Path, problem: str, fix: str):
        super().__init__(f"{path} {problem}; {fix}")
        self.path, self.problem = Path(path), problem


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_torch(path: str | Path, map_location: Any = "cpu", fix: str | None = None) -> Any:
    """Read a checkpoint without running code: `weights_only=True`, one clear error for a bad file, ending in
    `fix` (what to do about it where the caller knows: e.g. delete a run's checkpoint.pt to train afresh)."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused something: the file wants more than data
        why = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line or "Unsupported" in line),
                   "objects other than weights")
        raise UnsafeFileError(f"{path} is not a plain checkpoint ({why}); reid-kd loads only weights, numbers "
                              "and strings and refuses it: "
                              f"{fix or 'use a student.pt, teacher.pt or checkpoint.pt it wrote'}") from None
    except (OSError, MemoryError):  # missing or unreadable file: the caller's error names it
        raise
    except Exception as e:  # truncated zip, an empty file (EOFError), a text file, any other garbage
        detail = (str(e).splitlines() or [""])[0].split(". ")[0][:100] or type(e).__name__  # its first sentence
        raise DamagedFileError(path, f"is truncated or not a PyTorch checkpoint ({detail})",
                               fix or "replace it with an intact copy") from None


def _atomic(path: str | Path, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file asked for, not a temporary one
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, RuntimeError) and shutil.disk_usage(path.parent).free < FULL_DISK:
            # torch's zip writer reports a full disk as a RuntimeError: say what it is
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
        if isinstance(e, OSError) and e.filename is None:  # name the file the write was for
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    return path


def save_torch(obj: Any, path: str | Path) -> Path:
    import torch

    return _atomic(path, lambda f: torch.save(obj, f), "wb")


def write_bytes(data: bytes, path: str | Path) -> Path:
    return _atomic(path, lambda f: f.write(data), "wb")


def write_text(text: str, path: str | Path) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", path)


def read_json(path: str | Path) -> Any:
    """A JSON file reid-kd wrote; an unreadable one is named, with the fix."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFileError(path, f"is not readable JSON ({e})", "delete it to let the run that writes it "
                               "run again") from None


def file_in_the_way(path: str | Path | None) -> Path | None:
    """The file standing where `path` or a folder above it must be a folder (mkdir's NotADirectoryError or
    FileExistsError), None if there is none."""
    if not path:
        return None
    for part in reversed([Path(path), *Path(path).parents]):
        if part.exists() and not part.is_dir():
            return part
    return None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes a killed process left behind (never a complete file)."""
    folder = Path(folder)
    stale = sorted(folder.rglob(".*.tmp")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
