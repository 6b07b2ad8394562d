"""The process a run trains in: its device, threads, determinism and (under torchrun) process group."""
from __future__ import annotations

import torch

from reid_kd.errors import ConfigError
from reid_kd.utils import distributed


def select_device(name: str, setting: str = "config key 'experiment.device'", fix: str = "experiment.device=auto"
                  ) -> torch.device:
    """`auto`: the GPU when PyTorch sees one, else the CPU; `setting` and `fix` word the error for a missing GPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{setting} is '{name}' but PyTorch sees no CUDA device; use {fix} (or cpu)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{setting} is '{name}', not a device; use auto, cpu, cuda or cuda:N") from None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def forward_precision(forward_dtype: str | None, amp: bool, device: torch.device) -> str:
    """The type the teacher's forward computes in: `teacher.forward_dtype`, or as `experiment.amp` when null.

    `experiment.amp` means float16 on CUDA (its trainer scales the loss), bfloat16 elsewhere (float32's
    range, so no scaler)."""
    if forward_dtype is not None:
        return forward_dtype
    return ("float16" if device.type == "cuda" else "bfloat16") if amp else "float32"


def autocast(device: torch.device, enabled: bool):
    """`experiment.amp`'s mixed precision (see `forward_precision`), float32 when not `enabled`."""
    return forward_autocast(device, forward_precision(None, enabled, device))


def forward_autocast(device: torch.device, dtype: str):
    """Autocast to `dtype` (a `forward_precision`), none for float32."""
    return torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "float32")


def in_format(x: torch.Tensor, memory_format: str) -> torch.Tensor:
    """`x` laid out as a network of `memory_format` takes it (no copy for the default layout)."""
    return x if memory_format == "contiguous" else x.contiguous(memory_format=MEMORY_FORMATS[memory_format])


def as_layout(model: torch.nn.Module, memory_format: str) -> torch.nn.Module:
    """`model` with its weights (so its activations) in `memory_format`, converted in place."""
    return model.to(memory_format=MEMORY_FORMATS[memory_format])


def setup_runtime(cfg: dict) -> torch.device:
    exp = cfg["experiment"]
    if exp["threads"]:
        torch.set_num_threads(exp["threads"])
    if exp["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if distributed.launched():  # started by torchrun: join its process group, take this rank's device
        return distributed.init(select_device(exp["device"]).type)
    return select_device(exp["device"])
