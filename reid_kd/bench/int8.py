"""A suite's `deploy.int8` pass: after training, each finished student quantized and scored beside its float
models (`deploy/quantize.py`), its record in `int8.json` of its run folder, which the leaderboard's INT8
columns read. Its own room so that `run_suite` only calls it: training and deployment stay apart."""
from __future__ import annotations

import logging

import torch

from reid_kd.bench.claims import Claims
from reid_kd.bench.suite_file import Entry
from reid_kd.config import config_hash
from reid_kd.deploy.model import file_digest
from reid_kd.deploy.quantize import need_quantization, quantize_and_score
from reid_kd.engine.paths import run_folder, run_state
from reid_kd.engine.run_folder import RunFolder
from reid_kd.errors import ConfigError
from reid_kd.utils.io import DamagedFileError, read_json, write_json

logger = logging.getLogger(__name__)


def check_int8(runs: list[tuple[Entry, int, dict]]) -> None:
    """Before any work: the quantizer is installed, and the runs report the symmetric protocol first (an INT8
    student embeds queries and gallery itself, as `symmetric` scores it)."""
    need_quantization("suite key 'deploy.int8'")
    headline = sorted({cfg["eval"]["protocols"][0] for _, _, cfg in runs})
    if headline != ["symmetric"]:
        raise ConfigError(f"suite key 'deploy.int8' scores each INT8 student on its own gallery (the symmetric "
                          f"protocol), but the suite's runs report {', '.join(headline)} first; put symmetric "
                          "first in eval.protocols, or leave deploy.int8 off")


def quantize_students(runs: list[tuple[Entry, int, dict]], claims: Claims, images: int) -> None:
    """Each finished student without a current record, quantized on `images` calibration images. A record of
    this very student (config hash, weights' SHA-256) is kept, so a suite run again quantizes only students
    trained since; claimed as training is, so workers split them."""
    for entry, seed, cfg in runs:
        folder = run_folder(cfg)
        if run_state(cfg) != "done" or int8_current(folder, config_hash(cfg)) or not claims.claim(folder.path):
            continue
        try:
            if int8_current(folder, config_hash(cfg)):  # written by another worker since we looked
                continue
            if cfg["experiment"]["threads"]:  # the student and its ONNX models are timed at experiment.threads
                torch.set_num_threads(cfg["experiment"]["threads"])
            logger.info(f"{entry.name} seed{seed}: INT8: quantizing ({images} calibration images)")
            record = quantize_and_score(folder.weights, cfg, images)
            write_json({"config_hash": config_hash(cfg)} | record, folder.int8)
            torch_m, int8_m = record["models"]["pytorch"], record["models"]["int8"]
            logger.info(f"{entry.name} seed{seed}: INT8 mAP {100 * int8_m['mAP']:.2f} "
                        f"({100 * (int8_m['mAP'] - torch_m['mAP']):+.2f} against PyTorch), "
                        f"{int8_m['inference_images_per_sec']:.0f} images/s (PyTorch "
                        f"{torch_m['inference_images_per_sec']:.0f})")
        finally:
            claims.release(folder.path)


def int8_current(folder: RunFolder, spec_hash: str) -> bool:
    """Whether the folder's int8.json is the record of the run's config and of the student.pt there now."""
    if not folder.int8.is_file():
        return False
    try:
        record = read_json(folder.int8)
    except DamagedFileError:
        return False  # quantized again, and rewritten
    return (isinstance(record, dict) and record.get("config_hash") == spec_hash
            and record.get("checkpoint_sha256") == file_digest(folder.weights))
