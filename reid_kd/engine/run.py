"""One experiment: a teacher (trained once and cached, or loaded), a student, their evaluation.

Results land in `runs/<experiment>/<method>/seed<k>/`: the resolved `config.yaml`, `metrics.json`,
`student.pt`, `checkpoint.pt` and `log.csv`. Teachers are cached under `runs/teachers/<key>/`,
keyed by everything that shapes them (data, backbone, recipe, seed), so every method and seed of
a comparison distils from the very same teacher.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from reid_kd.config import config_hash, dump_config
from reid_kd.data.image_dataset import Loaders, build_loaders
from reid_kd.distill import build_distiller
from reid_kd.engine.io import save_torch, write_json, write_text
from reid_kd.engine.trainer import Trainer, select_device
from reid_kd.evaluation import evaluate_model
from reid_kd.models.reid_model import ReIDModel, build_model

METRIC_KEYS = ("mAP", "mINP", "rank1", "rank5", "rank10")


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def setup_runtime(cfg: dict) -> torch.device:
    exp = cfg["experiment"]
    if exp["threads"]:
        torch.set_num_threads(exp["threads"])
    if exp["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return select_device(exp["device"])


def method_name(cfg: dict) -> str:
    return "baseline" if cfg["distill"]["method"] == "none" else cfg["distill"]["method"]


def count_params(model: torch.nn.Module) -> int:
    """Parameters used at inference (the classifier is dropped for retrieval)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("classifier."))


def save_model(model: ReIDModel, model_cfg: dict, path: Path) -> None:
    save_torch({"model": model.state_dict(), "model_cfg": model_cfg, "num_classes": model.num_classes}, path)


def load_model(path: str | Path, device: torch.device | str = "cpu") -> ReIDModel:
    """Rebuild a model saved by `save_model` (its architecture travels with the weights)."""
    state = torch.load(path, map_location=device, weights_only=False)
    if "model_cfg" not in state:
        raise ValueError(f"{path} is not a reid-kd model file (no 'model_cfg'); use student.pt or teacher.pt")
    cfg = dict(state["model_cfg"], pretrained=None)
    model = build_model(cfg, state["num_classes"])
    model.load_state_dict(state["model"])
    return model.to(device)


def teacher_key(cfg: dict) -> str:
    t = cfg["teacher"]
    shaping = {"data": cfg["data"], "teacher": t, "seed": cfg["experiment"]["seed"]}
    return f"{cfg['data']['dataset']}-{t['backbone']}-{config_hash(shaping)}"


def get_teacher(cfg: dict, loaders: Loaders, device: torch.device, log=print) -> tuple[ReIDModel, dict]:
    """Load `teacher.checkpoint`, or reuse the cached teacher, or train and cache it first."""
    t_cfg = cfg["teacher"]
    if t_cfg["checkpoint"]:
        teacher = load_model(t_cfg["checkpoint"], device)
        return teacher, evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
    folder = Path(cfg["experiment"]["output_dir"]) / "teachers" / teacher_key(cfg)
    model_file, metrics_file = folder / "teacher.pt", folder / "metrics.json"
    if model_file.is_file() and metrics_file.is_file():
        log(f"teacher: reusing {model_file}")
        return load_model(model_file, device), json.loads(metrics_file.read_text())
    log(f"teacher: training {t_cfg['backbone']} into {folder}")
    teacher = build_model(t_cfg, loaders.dataset.num_train_pids)
    trainer = Trainer(teacher, loaders.train, t_cfg["train"], device, folder, seed=cfg["experiment"]["seed"],
                      amp=cfg["experiment"]["amp"], desc="teacher")
    seconds = trainer.fit()
    metrics = evaluate_model(teacher, loaders.query, loaders.gallery, cfg["eval"], device)
    metrics |= {"params": count_params(teacher), "train_seconds": seconds, "epochs": t_cfg["train"]["epochs"],
                "backbone": t_cfg["backbone"]}
    write_text(dump_config(cfg), folder / "config.yaml")
    save_model(teacher, t_cfg, model_file)
    write_json(metrics, metrics_file)  # written last: its presence marks a complete teacher
    trainer.checkpoint_path.unlink(missing_ok=True)
    return teacher, metrics


def run_dir(cfg: dict) -> Path:
    exp = cfg["experiment"]
    return Path(exp["output_dir"]) / exp["name"] / method_name(cfg) / f"seed{exp['seed']}"


def train_student(cfg: dict, loaders: Loaders, teacher: ReIDModel | None, device: torch.device) -> dict:
    """Train (or resume) the student of `cfg`, evaluate it and write the run's files."""
    exp, out = cfg["experiment"], run_dir(cfg)
    torch.manual_seed(exp["seed"])
    student = build_model(cfg["model"], loaders.dataset.num_train_pids)
    distiller = build_distiller(cfg["distill"], student, teacher)
    write_text(dump_config(cfg), out / "config.yaml")
    trainer = Trainer(student, loaders.train, cfg["train"], device, out, seed=exp["seed"],
                      teacher=teacher if distiller is not None else None, distiller=distiller, amp=exp["amp"],
                      desc=method_name(cfg))
    seconds = trainer.fit()
    metrics = evaluate_model(student, loaders.query, loaders.gallery, cfg["eval"], device)
    record = {
        "method": method_name(cfg), "dataset": cfg["data"]["dataset"],
        "teacher_backbone": cfg["teacher"]["backbone"], "student_backbone": cfg["model"]["backbone"],
        "seed": exp["seed"], **{k: metrics[k] for k in METRIC_KEYS}, "cmc": metrics["cmc"],
        "num_valid_queries": metrics["num_valid_queries"], "params": count_params(student),
        "train_seconds": seconds, "epochs": cfg["train"]["epochs"], "git_commit": git_commit(),
        "config_hash": config_hash(cfg), "device": device.type,
    }
    save_model(student, cfg["model"], out / "student.pt")
    write_json(record, out / "metrics.json")
    return record


def run_experiment(cfg: dict, log=print) -> tuple[dict, dict]:
    """Teacher metrics and the student's metrics.json record of one config."""
    device = setup_runtime(cfg)
    start = time.perf_counter()
    loaders = build_loaders(cfg["data"], cfg["experiment"]["seed"])
    log(loaders.dataset.summary())
    teacher, teacher_metrics = get_teacher(cfg, loaders, device, log)
    record = train_student(cfg, loaders, teacher, device)
    log(f"done in {time.perf_counter() - start:.0f} s; results in {run_dir(cfg)}")
    return teacher_metrics, record


def markdown_table(rows: list[tuple[str, str, dict]]) -> str:
    """(role, backbone, metrics) rows as a markdown table of percentages."""
    from tabulate import tabulate

    body = [[role, backbone, *(f"{100 * m[k]:.2f}" for k in ("mAP", "rank1", "rank5", "rank10", "mINP"))]
            for role, backbone, m in rows]
    return tabulate(body, headers=["Model", "Backbone", "mAP", "Rank-1", "Rank-5", "Rank-10", "mINP"],
                    tablefmt="github")
