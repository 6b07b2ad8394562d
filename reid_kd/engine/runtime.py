"""The process a run trains in: its device, threads, determinism and (under torchrun) process group."""
from __future__ import annotations

import logging

import torch

from reid_kd.errors import ConfigError
from reid_kd.utils import distributed

logger = logging.getLogger(__name__)


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
        device = distributed.init(select_device(exp["device"]).type)
    else:
        device = select_device(exp["device"])
    slow = slow_bfloat16(cfg, device)
    if slow and slow not in _warned:
        _warned.add(slow)
        logger.warning(slow)
    return device


_warned: set[str] = set()


def slow_bfloat16(cfg: dict, device: torch.device, native: bool | None = None) -> str | None:
    """A warning when the config computes in bfloat16 on a CPU without native bfloat16 (AVX-512 BF16 or AMX;
    `native`: as PyTorch's oneDNN reports): PyTorch then emulates it, and a 2-core AVX2 EPYC measured a
    ResNet-34 step 27x and a MobileNetV3-small step 11x slower than float32 (`benchmarks/step_times.py`)."""
    if device.type != "cpu":
        return None
    uses = {"teacher.forward_dtype=bfloat16": "teacher.forward_dtype=float32"} \
        if cfg["teacher"]["forward_dtype"] == "bfloat16" else {}
    if cfg["experiment"]["amp"]:  # bfloat16 on the CPU, the teacher's forward too where its forward_dtype is null
        uses["experiment.amp=true"] = "experiment.amp=false"
    if not uses:
        return None
    if native is None:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if native:
        return None
    return (f"{' and '.join(uses)} compute in bfloat16, which this CPU ({torch.backends.cpu.get_cpu_capability()}) "
            "has no instructions for: PyTorch emulates it, often 10-30x slower than float32 (benchmarks/step_times.py "
            f"shows it here); set {' '.join(uses.values())} on this machine (numbers then differ slightly from a table "
            "run in bfloat16)")
