"""`reidkd quantize`: a student as an INT8 model for the CPU, and what INT8 costs it against PyTorch.

Post-training static quantization with ONNX Runtime (`quantize_static`) of the float model `reidkd export`
writes: QDQ format, weights int8 per output channel with `reduce_range` (7 bits), activations uint8 per tensor,
ranges by MinMax calibration on a seeded sample of the config's train split, preprocessed as the model records.
The INT8 model is an ONNX file beside the float one (`student.int8.onnx`), with its JSON (the float model's,
plus how it was quantized), and is scored like any model file (`OnnxModel`).

Why ONNX Runtime, and these settings (a throwaway comparison, kept out of the package). On a quickstart
student (MobileNetV3-small, 64x64; 49.38 mAP on 415 queries x 1,000 gallery images), a 2-core AMD EPYC (Zen 3:
AVX2, no AVX-512, no VNNI), 256 calibration images; images/s of batches of 256, best of 7-9 rounds with every
model interleaved in one process, over four to seven such processes (the machine was shared: ranges, not points):

| model | mAP | cosine to PyTorch (min / mean) | images/s, 1 thread | 2 threads |
|---|---|---|---|---|
| PyTorch float32 | 49.38 | 1 | 1,010-1,450 | 1,530-2,260 |
| ONNX Runtime 1.32 float32 | 49.38 | 1.0000 (1e-7) | 2,320-2,530 | 3,910-4,720 |
| ONNX Runtime INT8 (these settings) | 49.06 | 0.988 / 0.9969 | 2,620-2,830 | 3,030-4,230 |
| the same without reduce_range | 48.86 | 0.929 / 0.9952 | 2,630-2,830 | 2,970-4,180 |
| the same with int8 activations | 49.54 | 0.991 / 0.9977 | 520-560 | 780-960 |
| OpenVINO 2026.4 float32 | 49.38 | 1.0000 | 2,830-2,890 | 3,400-4,330 |
| OpenVINO + NNCF 3.4 INT8, default preset | 49.13 | 0.969 / 0.9927 | 3,090-3,260 | 3,710-5,210 |
| OpenVINO + NNCF 3.4 INT8, mixed preset | 49.19 | 0.982 / 0.9965 | 3,210 | 5,260 |

Without reduce_range, AVX2's u8 x s8 multiply-add (vpmaddubsw) saturates its 16-bit sums; int8 activations have
no fast AVX2 kernel. Quantizing only the convolutions, or QOperator format, moved neither mAP (49.05-49.20) nor
speed past these. On this processor INT8 buys little speed: ONNX Runtime's INT8 model ran 1.08-1.14x its float
model at 1 thread and 0.78-0.94x at 2, in the same process (the gain needs VNNI or ARM's dot product); it buys
size (4.0 MB to 1.2 MB). OpenVINO's INT8 ran 1.14-1.38x ONNX Runtime's, at the same mAP (mixed preset) and
features as close. ONNX Runtime is chosen all the same: its INT8 model is an ONNX file, which `reidkd eval` and
`reidkd index` score like the float export and which any ONNX runtime (TensorRT, ONNX Runtime on ARM) loads,
where OpenVINO's is its own IR; it is already the `deploy` extra, where OpenVINO and NNCF would add about 500 MB
of packages; and its features are at least as close to PyTorch's. MinMax calibration barely depends on its size:
32 to 1,500 images gave 49.06 to 49.29 mAP; 256 is the default.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from reid_kd.data.image_dataset import build_loaders
from reid_kd.deploy import CALIBRATION_IMAGES
from reid_kd.deploy.export import ONNX_PACKAGES, RUNTIME, export_model, meta_file, need_packages
from reid_kd.deploy.index import image_loader, items_from_config
from reid_kd.deploy.model import file_digest, load_checkpoint
from reid_kd.deploy.onnx_model import OnnxModel
from reid_kd.engine.runtime import as_layout
from reid_kd.evaluation import evaluate_model
from reid_kd.models.checkpoint import input_config
from reid_kd.utils.io import read_json, write_bytes, write_json

CALIBRATION_SEED = 0  # the same sample for every student of a config: only the network differs
SUFFIX = ".int8.onnx"


def int8_file(float_file: str | Path) -> Path:
    """`student.int8.onnx` beside `student.onnx`."""
    float_file = Path(float_file)
    return float_file.with_name(float_file.name.removesuffix(".onnx") + SUFFIX)


def need_quantization(what: str) -> None:
    """One line naming the `deploy` extra when exporting, quantizing or running ONNX would fail (told first)."""
    need_packages(what, (*ONNX_PACKAGES, RUNTIME))


def calibration_items(cfg: dict, count: int, seed: int = CALIBRATION_SEED) -> list:
    """A seeded sample of `count` images of the config's train split (all of them when it holds fewer), in order."""
    train, _ = items_from_config(cfg, "train")
    picks = np.random.default_rng(seed).choice(len(train), min(count, len(train)), replace=False)
    return [train[i] for i in sorted(picks)]


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol: one {input name: batch} a call, None when done."""

    def __init__(self, loader, name: str):
        self.batches = ({name: images.numpy()} for images, *_ in loader)

    def get_next(self) -> dict | None:
        return next(self.batches, None)


@contextmanager
def _root_logger_quiet():
    """ONNX Runtime's quantizer warns on Python's root logger about its own choices (e.g. a 1-D BatchNorm weight
    quantized per tensor, as it must be): not the user's to act on."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_checkpoint(checkpoint: str | Path, cfg: dict, images: int = CALIBRATION_IMAGES,
                        out: str | Path | None = None) -> tuple[Path, Path]:
    """Export the float ONNX model (`reidkd export`; at `out`, default beside the checkpoint) and write its INT8
    twin beside it, each with its JSON; returns both model files."""
    need_quantization("reidkd quantize")
    from onnxruntime import __version__ as version
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    float_file, _ = export_model(checkpoint, "onnx", out)
    target = int8_file(float_file)
    model = OnnxModel(float_file)
    items = calibration_items(cfg, images)
    with tempfile.TemporaryDirectory(prefix="reidkd-int8-") as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # ONNX Runtime's own pre-processing (constant folding, shapes); its symbolic shape pass cannot read
        # the exporter's dynamic batch (an Expand of the norm), and the plain ONNX one suffices here
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
        batches = _Calibration(image_loader(model, items, batch_size=32), model.input_name)
        with _root_logger_quiet():
            quantize_static(str(prepared), str(quantized), batches,
                            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
        write_bytes(quantized.read_bytes(), target)
    meta = read_json(meta_file(float_file)) | {"file": target.name, "quantization": {
        "tool": f"onnxruntime {version} quantize_static", "format": "QDQ",
        "weights": "int8, per output channel, reduce_range (7 bits)", "activations": "uint8, per tensor",
        "calibration": {"method": "MinMax", "dataset": cfg["data"]["dataset"], "split": "train",
                        "images": len(items), "seed": CALIBRATION_SEED}}}
    write_json(meta, meta_file(target))
    return float_file, target


def compare_deployed(checkpoint: str | Path, cfg: dict, files: dict[str, Path]) -> dict[str, dict]:
    """`evaluate_model`'s metrics (images/s included) of the PyTorch student, in the layout its run evaluated it
    in, and of each exported model file (name -> file), scored one after another in this process on the CPU:
    the same loaders, threads and processor, so their images/s compare."""
    model = as_layout(load_checkpoint(checkpoint), cfg["model"]["memory_format"])
    loaders = build_loaders(input_config(model, cfg["data"]), cfg["experiment"]["seed"])
    models = {"pytorch": model} | {name: OnnxModel(file) for name, file in files.items()}
    cpu = torch.device("cpu")
    return {name: {k: v for k, v in evaluate_model(m, loaders.query, loaders.gallery, cfg["eval"], cpu).items()
                   if k != "cmc"} for name, m in models.items()}


def quantize_and_score(checkpoint: str | Path, cfg: dict, images: int = CALIBRATION_IMAGES,
                       out: str | Path | None = None) -> dict:
    """Quantize a student and score it beside its float models: the record `reidkd quantize` prints and a
    suite with `deploy.int8` keeps beside each run (int8.json)."""
    float_file, int8 = quantize_checkpoint(checkpoint, cfg, images, out)
    quantization = read_json(meta_file(int8))["quantization"]
    return {"checkpoint": str(Path(checkpoint).resolve()), "checkpoint_sha256": file_digest(checkpoint),
            "files": {"onnx": str(float_file), "int8": str(int8)}, "quantization": quantization,
            "threads": torch.get_num_threads(), "device": "cpu",
            "models": compare_deployed(checkpoint, cfg, {"onnx": float_file, "int8": int8})}
