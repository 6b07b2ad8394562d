"""What a result was made with, recorded in its metrics.json: the code's commit, the software versions and the
processor."""
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


def processor() -> str:
    """The CPU's model and the instructions PyTorch's kernels use on it, e.g. `AMD EPYC (AVX2)`: machines of one
    model name differ there, so do their numbers, and bfloat16 is emulated without native support."""
    name = platform.processor() or platform.machine()
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    native = ", bfloat16 native" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else ""
    return f"{name} ({torch.backends.cpu.get_cpu_capability()}{native})"


def software_environment(device: torch.device) -> dict:
    """What a run's numbers also depend on: the same seed can give another mAP under another PyTorch, processor
    or thread count."""
    env = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "faiss": faiss.__version__, "threads": torch.get_num_threads(), "cpu": processor()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
