"""Deployment under bad input (issue 25): an index folder tampered part by part, search parameters out of
range, crafted model files, outputs that cannot be written. Each ends in one line naming the file or option
and the fix, exit status 2, leaves earlier results byte-identical, and never hangs or prints a number."""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading

import cv2
import faiss
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_one_line, cli

import reid_kd.deploy.export as export_mod
from reid_kd.deploy.index import build_index, items_from_config
from reid_kd.deploy.search import PNG_COLUMNS
from reid_kd.evaluation.visualize import panel_size
from reid_kd.utils.io import load_torch, save_torch

QUICKSTART = "configs/quickstart.yaml"


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def indexes(deploy_setup, tmp_path_factory):
    """(config, student.pt, overrides, {kind: index folder}): Flat, HNSW and IVF indexes of the tiny gallery."""
    cfg, folder, overrides = deploy_setup
    items, _ = items_from_config(cfg, "gallery")
    base = tmp_path_factory.mktemp("indexes")
    built = {"flat": ("Flat", None), "hnsw": ("HNSW8", "efSearch=16"), "ivf": ("IVF4,Flat", "nprobe=2")}
    for kind, (factory, params) in built.items():
        build_index(folder / "student.pt", items, base / kind, factory, search_params=params)
    return cfg, folder / "student.pt", overrides, {kind: base / kind for kind in built}


def query_image(indexes) -> str:
    return pd.read_csv(indexes[3]["flat"] / "items.csv")["path"].iloc[0]


def sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


# --- search parameters: out of range never gives a number --------------------------------------------

OUT_OF_RANGE = [("hnsw", "efSearch=0", "efSearch=0"), ("hnsw", "efSearch=-5", "efSearch=-5"),
                ("ivf", "nprobe=0", "1..4"), ("ivf", "nprobe=-3", "1..4"), ("ivf", "nprobe=5", "1..4"),
                ("ivf", "nprobe=1e30", "whole number")]


@pytest.mark.parametrize("kind, params, word", OUT_OF_RANGE, ids=[f"{k}-{p}" for k, p, _ in OUT_OF_RANGE])
def test_search_params_out_of_range_are_refused_by_search_eval_and_build(indexes, kind, params, word, tmp_path):
    _, student, overrides, folders = indexes
    searched = cli("search", "--index", folders[kind], query_image(indexes), "--search-params", params)
    assert_one_line(searched, word, "--search-params")
    assert "|" not in searched.stdout  # no ranked list
    scored = cli("index", "eval", "--index", folders[kind], "--config", QUICKSTART, *sets(overrides),
                 "--search-params", params)
    assert_one_line(scored, word)
    assert "mAP" not in scored.stdout and "recall" not in scored.stdout
    factory = {"hnsw": "HNSW8", "ivf": "IVF4,Flat"}[kind]
    built = cli("index", "build", "--checkpoint", student, "--config", QUICKSTART, *sets(overrides),
                "--factory", factory, "--search-params", params, "--out", tmp_path / "new")
    assert_one_line(built, word)
    assert not (tmp_path / "new" / "index.json").exists()


def test_search_params_in_range_still_search(indexes):
    _, _, _, folders = indexes
    found = cli("search", "--index", folders["ivf"], query_image(indexes), "--search-params", "nprobe=4",
                "--top-k", "3")
    assert found.exit_code == 0, found.output
    found = cli("search", "--index", folders["hnsw"], query_image(indexes), "--search-params", "efSearch=1",
                "--top-k", "3")  # FAISS widens efSearch to k
    assert found.exit_code == 0, found.output
    assert len([line for line in found.stdout.splitlines() if line.startswith("|") and "---" not in line]) == 1 + 3


# --- a failed build leaves the index it would replace as it was --------------------------------------

def test_failed_build_over_an_index_leaves_it_byte_identical(indexes, tmp_path):
    _, student, overrides, folders = indexes
    target = tmp_path / "index"
    shutil.copytree(folders["hnsw"], target)
    before = snapshot(target)
    args = ["index", "build", "--config", QUICKSTART, *sets(overrides), "--out", target]
    assert_one_line(cli(*args, "--checkpoint", tmp_path / "studnet.pt"), "studnet.pt")
    assert_one_line(cli(*args, "--checkpoint", student, "--factory", "IVF4,Flta"), "--factory")
    assert_one_line(cli(*args, "--checkpoint", student, "--factory", "HNSW8", "--search-params", "efSearch=0"),
                    "efSearch")
    assert snapshot(target) == before and sorted(p.name for p in target.iterdir()) == sorted(before)
    rebuilt = cli(*args, "--checkpoint", student)  # a Flat index over the HNSW one: its features.npy goes
    assert rebuilt.exit_code == 0, rebuilt.output
    assert sorted(p.name for p in target.iterdir()) == ["index.faiss", "index.json", "items.csv"]
    assert json.loads((target / "index.json").read_text())["factory"] == "Flat"


# --- an index folder tampered part by part ------------------------------------------------------------

def other_dimension(folder):
    index = faiss.IndexFlatIP(7)
    index.add(np.eye(7, dtype=np.float32)[np.arange(faiss.read_index(str(folder / "index.faiss")).ntotal) % 7])
    faiss.write_index(index, str(folder / "index.faiss"))


def other_dimension_recorded_too(folder):
    other_dimension(folder)
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(meta | {"dim": 7}))


def edit_items(change):
    def tamper(folder):
        table = pd.read_csv(folder / "items.csv")
        change(table).to_csv(folder / "items.csv", index=False)
    return tamper


def edit_meta(change):
    def tamper(folder):
        (folder / "index.json").write_text(json.dumps(change(json.loads((folder / "index.json").read_text()))))
    return tamper


def fifo_items(folder):
    (folder / "items.csv").unlink()
    os.mkfifo(folder / "items.csv")


def save_features(array):
    def tamper(folder):
        np.save(folder / "features.npy", array(np.load(folder / "features.npy")), allow_pickle=True)
    return tamper


TAMPERED = [
    ("index of another dimension", "flat", other_dimension, "index.faiss"),
    ("index and record of another dimension", "flat", other_dimension_recorded_too, "index.faiss"),
    ("items.csv with a row more", "flat", edit_items(lambda t: pd.concat([t, t.iloc[:1]])), "items.csv"),
    ("items.csv with a row less", "flat", edit_items(lambda t: t.iloc[1:]), "items.csv"),
    ("items.csv with a text identity", "flat", edit_items(lambda t: t.assign(pid="seven")), "items.csv"),
    ("items.csv empty", "flat", lambda f: (f / "items.csv").write_text(""), "items.csv"),
    ("items.csv a FIFO", "flat", fifo_items, "items.csv"),
    ("index.json without search_params", "hnsw", edit_meta(lambda m: {k: v for k, v in m.items()
                                                                      if k != "search_params"}), "index.json"),
    ("index.json a list", "flat", edit_meta(lambda m: [m]), "index.json"),
    ("features.npy of the wrong shape", "hnsw", save_features(lambda a: a[:, :-1]), "features.npy"),
    ("features.npy holding objects", "ivf", save_features(lambda a: a.astype(object)), "features.npy"),
]


@pytest.mark.parametrize("name, kind, tamper, part", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_tampered_index_part_is_named_in_one_line(indexes, tmp_path, name, kind, tamper, part):
    folder = tmp_path / "index"
    shutil.copytree(indexes[3][kind], folder)
    tamper(folder)
    line = assert_one_line(cli("search", "--index", folder, query_image(indexes), timeout=60), part,
                           "reidkd index build")
    assert str(folder) in line


# --- search --png: only regular files, a picture sized by its hits ------------------------------------

def test_a_fifo_among_the_gallery_paths_is_refused_not_waited_on(indexes, tmp_path):
    folder = tmp_path / "index"
    shutil.copytree(indexes[3]["flat"], folder)
    table = pd.read_csv(folder / "items.csv")
    fifo = tmp_path / "0001_c001_fifo.jpg"
    os.mkfifo(fifo)
    table.loc[:, "path"] = str(fifo)  # every hit is the FIFO
    table.to_csv(folder / "items.csv", index=False)
    # were it opened, a writer unblocks it after 30 s: the hang shows as a slow failure, not a stuck suite
    unblock = threading.Timer(30, lambda: os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)))
    unblock.daemon = True
    unblock.start()
    try:
        result = cli("search", "--index", folder, query_image(indexes), "--png", tmp_path / "lists.png", timeout=60)
    finally:
        unblock.cancel()
    assert_one_line(result, str(fifo), "not a regular file")
    assert not (tmp_path / "lists.png").exists()


def test_a_huge_top_k_draws_a_picture_of_the_hits_capped_in_columns(indexes, tmp_path):
    folder = indexes[3]["flat"]
    count = json.loads((folder / "index.json").read_text())["count"]
    for top_k in (10_000_000, 3):
        result = cli("search", "--index", folder, query_image(indexes), "--top-k", top_k, "--png",
                     tmp_path / f"{top_k}.png")
        assert result.exit_code == 0, result.output
        width = cv2.imread(str(tmp_path / f"{top_k}.png")).shape[1]
        assert width == panel_size(min(top_k, count, PNG_COLUMNS))[1]


# --- crafted model files: refused before a network is built -------------------------------------------

def wrong_shape(state):
    state["model"]["neck.weight"] = torch.ones(3)


def huge_classes(state):
    state["num_classes"] = 10 ** 13


def no_neck(state):
    del state["model_cfg"]["neck"]


def unknown_backbone(state):
    state["model_cfg"]["backbone"] = "resnet19"


def huge_input(state):
    state["input"] |= {"height": 10 ** 6, "width": 10 ** 6}


CRAFTED = [("tensor of the wrong shape", wrong_shape, "neck.weight"), ("num_classes 1e13", huge_classes, "num_classes"),
           ("model_cfg without neck", no_neck, "model_cfg"), ("unknown backbone", unknown_backbone, "resnet19"),
           ("input of 1e6 x 1e6", huge_input, "input size")]


@pytest.mark.parametrize("name, craft, word", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_model_file_is_refused_by_export_and_eval(indexes, tmp_path, name, craft, word):
    _, student, overrides, _ = indexes
    state = load_torch(student)
    craft(state)
    crafted = save_torch(state, tmp_path / "student.pt")  # weights_only-safe: tensors, numbers, strings
    assert_one_line(cli("export", "--checkpoint", crafted, "--format", "torchscript", timeout=60), str(crafted), word)
    assert not (tmp_path / "student.ts").exists()
    assert_one_line(cli("eval", "--checkpoint", crafted, "--config", QUICKSTART, *sets(overrides), timeout=60),
                    str(crafted), word)


# --- the command line's own options ------------------------------------------------------------------

def test_onnx_without_the_deploy_extra_says_how_to_install_it(indexes, monkeypatch, tmp_path):
    real = export_mod.importlib.util.find_spec
    monkeypatch.setattr(export_mod.importlib.util, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    assert_one_line(cli("export", "--checkpoint", indexes[1], "--format", "onnx", "--out", tmp_path / "m.onnx"),
                    "onnxscript", "pip install -e '.[deploy]'")


def test_unknown_device_is_one_line(indexes):
    assert_one_line(cli("search", "--index", indexes[3]["flat"], query_image(indexes), "--device", "tpu7"),
                    "--device", "tpu7", "cpu")


def test_an_output_that_cannot_be_written_names_the_path_and_its_option(indexes, monkeypatch, tmp_path):
    def refused(*args, dir=None, prefix="", **kwargs):  # as a read-only folder answers (root ignores modes)
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2z3.tmp")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    _, student, _, folders = indexes
    for option, args, path in (
            ("--png", ["search", "--index", folders["flat"], query_image(indexes)], tmp_path / "ro" / "lists.png"),
            ("--out", ["export", "--checkpoint", student, "--format", "torchscript"], tmp_path / "ro" / "m.ts"),
            ("--out", ["index", "build", "--checkpoint", student, "--images", query_image(indexes)], tmp_path / "ro")):
        line = assert_one_line(cli(*args, option, path), f"cannot write {path}:", f"set {option} elsewhere")
        assert ".tmp" not in line and "experiment.output_dir" not in line
