"""`reidkd export`: a checkpoint's retrieval model as ONNX or TorchScript, its preprocessing as JSON beside it.

Both formats take a float32 NCHW batch of any size (RGB, resized and normalised as the JSON says) and
return the L2-normalised `bn_feat`, one row per image. ONNX goes through PyTorch's `torch.export`-based
exporter (the supported one since PyTorch 2.9); TorchScript through `torch.jit.trace`, which PyTorch
marks deprecated but which every TorchScript runtime (LibTorch, Triton's PyTorch backend) still loads.
A student trained at its own `model.input_size` takes the same images and resizes them itself, as in
training and evaluation, so a deployment's features are the ones that were scored.
"""
from __future__ import annotations

import importlib.util
import io
import warnings
from pathlib import Path

import torch

from reid_kd.deploy.model import RetrievalModel, file_digest, load_checkpoint
from reid_kd.errors import UserError
from reid_kd.models.checkpoint import weights_digest
from reid_kd.utils.io import write_bytes, write_json

FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
ONNX_PACKAGES = ("onnx", "onnxscript")  # the `deploy` extra: torch.onnx.export(dynamo=True) writes with them
RUNTIME = "onnxruntime"  # the `deploy` extra: runs and quantizes an exported model
OPSET = 18  # ONNX opset: ONNX Runtime 1.14+ and TensorRT 8.6+ read it


def need_packages(what: str, packages: tuple[str, ...], other: str = "") -> None:
    """One line naming the `deploy` extra when `what` (an option, a file, a suite key) needs a package it lacks."""
    missing = [m for m in packages if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"{what} needs {', '.join(missing)}, which is not installed: pip install -e '.[deploy]'{other}")


def meta_file(model_file: str | Path) -> Path:
    """`student.onnx.json` beside `student.onnx`: how to prepare an image, what comes out, where it came from."""
    model_file = Path(model_file)
    return model_file.with_name(model_file.name + ".json")


def example_batch(spec: dict, batch: int = 2) -> torch.Tensor:
    """A random batch in the model's input shape (batch 2: a batch dimension of 1 would be fixed by the export)."""
    return torch.randn(batch, 3, spec["height"], spec["width"], generator=torch.Generator().manual_seed(0))


def export_model(checkpoint: str | Path, fmt: str, out: str | Path | None = None) -> tuple[Path, Path]:
    """Write the exported model and `<model file>.json` (input, output, provenance); returns both paths."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":
        need_packages("--format onnx", ONNX_PACKAGES, " (or use --format torchscript)")
    checkpoint = Path(checkpoint)
    model = load_checkpoint(checkpoint)
    out = Path(out) if out else checkpoint.with_suffix(FORMATS[fmt])
    retrieval = RetrievalModel(model).eval()
    example = example_batch(model.input)
    data = _onnx_bytes(retrieval, example) if fmt == "onnx" else _torchscript_bytes(retrieval, example)
    write_bytes(data, out)
    meta = {"format": fmt, "file": out.name, "input": {"name": "images", "layout": "NCHW", "dtype": "float32",
                                                       "batch": "dynamic", **model.input},
            "output": {"name": "features", "dim": model.retrieval_dim, "normalised": "L2",
                       "compare": "inner product (cosine similarity); higher is more similar"},
            "backbone": model.backbone_name, "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": file_digest(checkpoint), "weights_sha256": weights_digest(model),
            "distilled_from": model.distilled_from,  # its teacher's weights: the gallery index it may search
            "torch": torch.__version__}
    if model.input_size is not None:  # `model.input_size`: resized inside the network; feed it what `input` says
        meta["network_input"] = {"height": model.input_size[0], "width": model.input_size[1],
                                 "resize": "bilinear, antialiased, inside the model"}
    if fmt == "onnx":
        meta["opset"] = OPSET
    return out, write_json(meta, meta_file(out))


def _onnx_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    batch = torch.export.Dim("batch", min=1)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), input_names=["images"], output_names=["features"],
                                    dynamic_shapes={"images": {0: batch}}, opset_version=OPSET, dynamo=True,
                                    verbose=False)
    program.save(buffer)  # an in-memory ONNX file: written to disk atomically by the caller
    return buffer.getvalue()


def _torchscript_bytes(model: torch.nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit's deprecation notices
        torch.jit.save(torch.jit.trace(model, example), buffer)
    return buffer.getvalue()
