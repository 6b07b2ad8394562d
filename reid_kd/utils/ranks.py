"""Which process this is under torch.distributed, readable without importing torch.

Light on purpose: the tools that only read or write files (leaderboards, a suite's status, run folders
and their locks) ask "am I rank 0?" too, and must not start torch for it. A process group exists only
once torch.distributed was imported and initialised, so until torch is loaded every answer is the
single process's.
"""
from __future__ import annotations

import os
import sys


def launched() -> bool:
    """True in a process torchrun started with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    dist = sys.modules.get("torch.distributed")  # never imported: no process group can exist
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return sys.modules["torch.distributed"].get_rank() if active() else 0


def world_size() -> int:
    return sys.modules["torch.distributed"].get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, logs, metrics and leaderboards."""
    return rank() == 0
