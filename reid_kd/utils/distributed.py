"""Data-parallel training on torch.distributed: one process per GPU (NCCL) or per CPU share (gloo).

Started by torchrun (`torchrun --nproc_per_node N -m reid_kd run --config F`, or `reidkd run --nproc N`),
which sets RANK, WORLD_SIZE and LOCAL_RANK. Every rank trains on its share of each global P×K batch
(whole identities, see `data/sampler.py`); gradients are averaged by DistributedDataParallel, so with
equal shares a step is the step one process would take on the whole batch. Rank 0 alone writes files.

Without those variables (or with WORLD_SIZE=1) every helper here is a no-op and one process runs as before.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from reid_kd.utils.ranks import active, is_main, launched, rank, world_size  # noqa: F401 (re-exported)

TIMEOUT = timedelta(minutes=30)  # a rank waiting longer at a collective than this gives up (a dead peer)


def init(device_type: str) -> torch.device:
    """Join the process group torchrun describes; this rank's device: its LOCAL_RANK's GPU, or the CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_type == "cuda"
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=TIMEOUT)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every rank's rows, concatenated in rank order (no gradient): what one process would hold for the batch."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def gather_rows_with_grad(x: torch.Tensor) -> torch.Tensor:
    """`gather_rows` through which gradients flow back to the rank that computed each row."""
    return _GatherRows.apply(x) if active() else x


def sum_with_grad(x: torch.Tensor) -> torch.Tensor:
    """The sum of `x` over the ranks, with the gradient of every rank's use of it flowing back."""
    return _SumOverRanks.apply(x) if active() else x


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_r x_r on every rank; each x_r then receives Σ_r ∂L_r/∂y."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class _GatherRows(torch.autograd.Function):
    """Rows of every rank in rank order; a rank's rows receive the gradient every rank sends them."""

    @staticmethod
    def forward(ctx, x):
        ctx.rows = len(x)
        return gather_rows(x)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce-scatter: sum everything, keep this rank's rows
        return grad[rank() * ctx.rows:(rank() + 1) * ctx.rows]


def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over the ranks (no gradient), e.g. the global batch's loss from equal shares."""
    if not active():
        return x
    x = x.clone()
    dist.all_reduce(x)
    return x / world_size()


def average_gradients(params) -> None:
    """Average the gradients of parameters that DistributedDataParallel does not manage, over the ranks."""
    if not active():
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world_size())


def gather_in_order(x: torch.Tensor, total: int) -> torch.Tensor:
    """Rows of a sharded pass (rank r holds items r, r + N, r + 2N, ...) back in dataset order."""
    if not active():
        return x
    n, per_rank = world_size(), -(-total // world_size())
    padded = torch.zeros((per_rank, *x.shape[1:]), dtype=x.dtype, device=x.device)
    padded[:len(x)] = x
    by_rank = gather_rows(padded).reshape(n, per_rank, *x.shape[1:])  # item i sits at (i % N, i // N)
    return by_rank.transpose(0, 1).reshape(n * per_rank, *x.shape[1:])[:total]


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over the global batch of every rank, on any device and backend (gloo included).

    PyTorch's SyncBatchNorm runs on GPUs only; this one reduces the batch's sums with a differentiable
    all-reduce, so forward statistics and backward gradients are those of one process on the whole batch.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2-d input, got {input.dim()}-d")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor(float(input.numel() // input.shape[1]), device=input.device)
        total = sum_with_grad(count)
        mean = sum_with_grad(input.sum(dims)) / total
        centred = input - mean.view(shape)
        var = sum_with_grad((centred * centred).sum(dims)) / total
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * total / (total - 1).clamp(min=1), alpha=m)
        out = centred / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batch_norm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `model` synchronised across ranks: PyTorch's on GPUs, `GlooSyncBatchNorm` elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        synced = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        if module.affine:
            synced.weight.requires_grad_(module.weight.requires_grad)
            synced.bias.requires_grad_(module.bias.requires_grad)
        return synced.to(next(module.buffers(), torch.empty(0)).device)
    for name, child in module.named_children():
        setattr(module, name, _convert(child))
    return module
