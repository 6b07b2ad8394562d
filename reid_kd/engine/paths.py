"""Where a run, a cached teacher and cached pretrained weights live, and the keys that name them.

    <output_dir>/<experiment.name>/<run_name>/seed<k>/   one run (config.yaml, metrics.json, student.pt, log.csv)
    <output_dir>/teachers/<key>/                          a teacher, shared by every method and seed it fits
    <output_dir>/pretrained/<key>/                        a backbone pretrained on synthetic vehicles

A cache key hashes everything that shapes the weights (its spec, recorded in the folder and checked
before reuse), so one folder never holds two different networks. Light on imports (no torch): the suite
tools read these paths without loading the training stack.
"""
from __future__ import annotations

from pathlib import Path

from reid_kd.config import config_hash
from reid_kd.engine.run_folder import RunFolder
from reid_kd.schema import SCHEMA

ROLES = {"model": "student", "teacher": "teacher"}  # config block -> the network it describes
NOT_SHAPING = ("root", "workers", "cache_images", "test_batch_size")  # data keys that leave the weights alone


def method_name(cfg: dict) -> str:
    return "baseline" if cfg["distill"]["method"] == "none" else cfg["distill"]["method"]


def run_name(cfg: dict) -> str:
    """The run's folder name: `experiment.run_name` (a suite's entry, e.g. an ablation) or the method."""
    return cfg["experiment"]["run_name"] or method_name(cfg)


def experiment_dir(cfg: dict) -> Path:
    """The folder of an experiment's (a suite's) runs."""
    return Path(cfg["experiment"]["output_dir"]) / cfg["experiment"]["name"]


def run_id(run: str, seed: int) -> str:
    """`<run>/seed<k>`: a run's folder under its experiment's, and its name in a suite's records."""
    return f"{run}/seed{seed}"


def run_dir(cfg: dict) -> Path:
    return experiment_dir(cfg) / run_id(run_name(cfg), cfg["experiment"]["seed"])


def run_folder(cfg: dict) -> RunFolder:
    return RunFolder(run_dir(cfg), "student.pt")


def run_state(cfg: dict) -> str:
    """The state of `cfg`'s run folder for this very config (done, resume, new, other: see RunFolder.state)."""
    return run_folder(cfg).state(config_hash(cfg))


def teacher_seed(cfg: dict) -> int:
    """`teacher.seed`, or the experiment's seed when it is null (then each seed has its own teacher)."""
    seed = cfg["teacher"]["seed"]
    return cfg["experiment"]["seed"] if seed is None else seed


def training_layout(net: dict, recipe: dict) -> str:
    """The memory format a network trains in under `recipe`: the recipe's own, else the network's."""
    return recipe["memory_format"] or net["memory_format"]


def trained_in_layout(net: dict, recipe: dict) -> tuple[dict, str]:
    """`recipe` without its layout, and the layout it trains `net` in: how a cache key hashes them (the layout
    a network only runs in is left out, and a key made before recipes had a layout stays the same)."""
    return {k: v for k, v in recipe.items() if k != "memory_format"}, training_layout(net, recipe)


def teacher_spec(cfg: dict) -> dict:
    """Everything the cached teacher's weights depend on (what its key hashes): its training precision and
    layout too, not the precision or layout of its forward while students distil."""
    t = {k: v for k, v in cfg["teacher"].items() if k not in ("seed", "forward_dtype")}
    if t["embedding_dim"] is None:  # the BN neck: keys made before the retrieval head existed stay the same
        del t["embedding_dim"]
    t["train"], t["memory_format"] = trained_in_layout(cfg["teacher"], cfg["teacher"]["train"])
    spec = {"data": cfg["data"], "teacher": t, "seed": teacher_seed(cfg), "amp": cfg["experiment"]["amp"]}
    if t["pretrained"] == "synth":  # the weights it starts from are part of what it is
        spec["start"] = pretrain_key(cfg, "teacher")
    return spec


def teacher_key(cfg: dict) -> str:
    return f"{cfg['data']['dataset']}-{cfg['teacher']['backbone']}-{config_hash(teacher_spec(cfg))}"


def teacher_dir(cfg: dict) -> Path:
    return Path(cfg["experiment"]["output_dir"]) / "teachers" / teacher_key(cfg)


def teacher_folder(cfg: dict) -> RunFolder:
    return RunFolder(teacher_dir(cfg), "teacher.pt", keep_checkpoint=False)


def pretrain_data(cfg: dict) -> dict:
    """The pretraining set's `data` block: the benchmark's image recipe on `pretrain.synth`'s vehicles,
    generated under `<data.root>/pretrain/` (never the benchmark's own folder)."""
    common = {k: v for k, v in cfg["data"].items() if k in SCHEMA["data"]}  # no benchmark dataset's options block
    return {**common, "dataset": "synth_veri", "root": str(Path(cfg["data"]["root"]) / "pretrain"),
            "synth": cfg["pretrain"]["synth"], "train_datasets": [], "validation_fraction": 0.0}


def shaping(cfg: dict, block: str) -> dict:
    """Everything the pretrained weights of `cfg[block]`'s backbone depend on (what their key hashes)."""
    net = cfg[block]
    data = {k: v for k, v in pretrain_data(cfg).items() if k not in NOT_SHAPING}
    recipe, layout = trained_in_layout(net, cfg["pretrain"][ROLES[block]])
    return {"backbone": net["backbone"], "last_stride": net["last_stride"], "neck": net["neck"], "data": data,
            "train": recipe, "seed": cfg["pretrain"]["seed"], "amp": cfg["experiment"]["amp"],
            "memory_format": layout}


def pretrain_key(cfg: dict, block: str) -> str:
    return f"synth-{cfg[block]['backbone']}-{config_hash(shaping(cfg, block))}"


def pretrain_dir(cfg: dict, block: str) -> Path:
    return Path(cfg["experiment"]["output_dir"]) / "pretrained" / pretrain_key(cfg, block)


def pretrain_folder(cfg: dict, block: str) -> RunFolder:
    return RunFolder(pretrain_dir(cfg, block), "backbone.pt", keep_checkpoint=False)
