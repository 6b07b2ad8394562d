"""Inference speed of a model, measured once when a run is evaluated and stored in its metrics, so
leaderboards are rebuilt from stored numbers."""
from __future__ import annotations

import time

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def inference_speed(model: torch.nn.Module, loader, device: torch.device, max_images: int = 2048) -> float:
    """Images/s of the retrieval forward pass over (up to `max_images` of) a test loader, after a warm-up.

    Only the forward pass is timed, not image decoding.
    """
    was_training = model.training
    model.eval()
    model(next(iter(loader))[0].to(device))  # warm-up: allocator, cuDNN autotuning, lazy inits
    n, seconds = 0, 0.0
    for images, *_ in loader:
        images = images.to(device)
        _sync(device)
        start = time.perf_counter()
        model(images)
        _sync(device)
        seconds += time.perf_counter() - start
        n += len(images)
        if n >= max_images:
            break
    model.train(was_training)
    return n / max(seconds, 1e-9)
