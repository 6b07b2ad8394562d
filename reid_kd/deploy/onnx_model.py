"""An exported ONNX model (float, or INT8 from `reidkd quantize`) run by ONNX Runtime on the CPU, in the shape
evaluation reads a network in: called on an image batch it returns an output whose `bn_feat` is the feature,
and it carries the `input` it expects (from the JSON export wrote beside it). So `reidkd eval`, `reidkd index`
and the suite's INT8 columns score the deployed file itself through the same extraction and `evaluate` as a
checkpoint, never a re-implementation of either.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from reid_kd.deploy.export import FORMATS, RUNTIME, meta_file, need_packages
from reid_kd.deploy.model import load_checkpoint
from reid_kd.errors import UserError
from reid_kd.utils.io import DamagedFileError, read_json

INPUT_KEYS = ("height", "width", "color", "resize", "scale", "mean", "std")  # data/transforms.py model_input


class OnnxModel:
    """An ONNX file's session with `input`, `retrieval_dim`, `backbone_name` and `weights_sha256` from its JSON.

    Runs on the CPU with as many threads as PyTorch has here (`experiment.threads`), so the two are timed alike;
    its features come back on the device of the images given."""

    training = False  # an exported graph has no training mode: eval() and train() leave it as it is

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"model file not found: {path}; export one with `reidkd export` or `reidkd quantize`")
        need_packages(str(path), (RUNTIME,))
        meta = _read_meta(path)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        options.log_severity_level = 3  # errors only: ONNX Runtime's notes on the graph are not the user's
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ONNX Runtime raises its own Fail / InvalidGraph / InvalidProtobuf types
            raise UserError(f"{path} is not an ONNX model ONNX Runtime can run ({' '.join(str(e).split())[:120]}); "
                            "export it again with `reidkd export --format onnx`") from None
        self.path, self.meta = path, meta
        self.input = {k: meta["input"][k] for k in INPUT_KEYS}
        self.retrieval_dim, self.backbone_name = meta["output"]["dim"], meta["backbone"]
        self.weights_sha256 = meta.get("weights_sha256")  # the PyTorch weights it was exported from
        self.distilled_from = meta.get("distilled_from")  # those of its teacher (a distilled student's export)
        self.input_name, self.output_name = meta["input"]["name"], meta["output"]["name"]

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def __call__(self, images: torch.Tensor) -> SimpleNamespace:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        features = self.session.run([self.output_name], {self.input_name: array})[0]
        return SimpleNamespace(bn_feat=torch.from_numpy(features).to(images.device))


def is_onnx(path: str | Path) -> bool:
    """Whether a model file is an exported ONNX model (else a checkpoint), by its name as export writes it."""
    return Path(path).suffix == FORMATS["onnx"]


def load_deployed(path: str | Path, device: torch.device | str = "cpu"):
    """The model a file holds, ready to embed images: an exported ONNX model (float or INT8; ONNX Runtime on the
    CPU) or a checkpoint (student.pt, teacher.pt)."""
    return OnnxModel(path) if is_onnx(path) else load_checkpoint(path, device)


def _read_meta(path: Path) -> dict:
    """The JSON beside an exported model, with what scoring needs checked (a damaged one is named with the fix)."""
    file = meta_file(path)
    fix = "export the model again with `reidkd export --format onnx` (or `reidkd quantize`)"
    if not file.is_file():
        raise UserError(f"{path} has no {file.name} beside it (its input size and normalisation); {fix}")
    try:
        meta = read_json(file)
    except DamagedFileError:
        raise UserError(f"{file} is not readable JSON; {fix}") from None
    ok = (isinstance(meta, dict) and isinstance(meta.get("input"), dict) and isinstance(meta.get("output"), dict)
          and all(k in meta["input"] for k in (*INPUT_KEYS, "name")) and isinstance(meta.get("backbone"), str)
          and isinstance(meta["output"].get("dim"), int) and "name" in meta["output"])
    if not ok:
        raise UserError(f"{file} lacks the input, output or backbone an export records; {fix}")
    return meta
