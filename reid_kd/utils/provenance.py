"""What a result was made with, recorded in its metrics.json: the code's commit and the software versions."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import faiss
import torch
import torchvision


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def software_environment(device: torch.device) -> dict:
    """What a run's numbers also depend on: the same seed can give another mAP under another PyTorch."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "faiss": faiss.__version__, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
