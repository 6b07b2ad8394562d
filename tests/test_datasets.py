"""Loaders on generated fixtures in the real VeRi-776 and Market-1501 layouts."""
import inspect
from dataclasses import asdict, fields

import pytest

from reid_kd.data import synth
from reid_kd.data.catalog import DATASETS
from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import DatasetLayoutError
from reid_kd.errors import ConfigError


def test_veri776_layout_relabels_and_parses_cameras(tmp_path, jpeg):
    root = tmp_path / "VeRi"
    train = ["0005_c003_00012345_0.jpg", "0005_c011_00012399_0.jpg", "0042_c001_00000010_0.jpg"]
    query = ["0002_c002_00030600_0.jpg"]
    test = ["0002_c002_00030600_0.jpg", "0002_c020_00030700_0.jpg", "0009_c004_00000001_0.jpg"]
    for folder, names in (("image_train", train), ("image_query", query), ("image_test", test)):
        for i, n in enumerate(names):
            jpeg(root / folder / n, i)
    (root / "name_train.txt").write_text("\n".join(train) + "\n")
    (root / "name_query.txt").write_text("\n".join(query) + "\n")
    # no name_test.txt: the loader falls back to the folder listing
    jpeg(root / "image_test" / "Thumbs_not_an_image.jpg")
    ds = build_dataset("veri776", tmp_path)
    assert sorted({it.pid for it in ds.train}) == [0, 1]  # 5 -> 0, 42 -> 1
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 2), (0, 10), (1, 0)]
    assert [(it.pid, it.camid) for it in ds.query] == [(2, 1)]  # query keeps original ids, cams 0-based
    assert sorted((it.pid, it.camid) for it in ds.gallery) == [(2, 1), (2, 19), (9, 3)]


def test_market1501_drops_junk_keeps_distractors(tmp_path, jpeg):
    root = tmp_path / "Market-1501-v15.09.15"
    files = {
        "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0007_c6s2_000123_02.jpg"],
        "query": ["0001_c1s1_001051_00.jpg"],
        "bounding_box_test": ["-1_c1s1_000401_03.jpg", "0000_c3s1_000151_01.jpg", "0001_c5s1_001351_02.jpg"],
    }
    for folder, names in files.items():
        for i, n in enumerate(names):
            jpeg(root / folder / n, i)
    ds = build_dataset("market1501", tmp_path)
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (0, 1), (1, 5)]
    assert [(it.pid, it.camid) for it in ds.gallery] == [(0, 2), (1, 4)]  # -1 dropped, 0 kept
    assert ds.query[0].pid == 1 and ds.query[0].camid == 0


def test_missing_folder_names_folder_and_layout(tmp_path):
    with pytest.raises(DatasetLayoutError) as err:
        build_dataset("veri776", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "VeRi") in message and "image_train/" in message and "\n" not in message


def test_synthetic_veri_is_read_by_the_veri_loader_and_is_deterministic(tmp_path):
    spec = synth.SynthSpec(train_ids=5, test_ids=4, cameras=4, images_per_id=4, image_size=32, seed=3)
    a = synth.generate(tmp_path / "a", spec)
    b = synth.generate(tmp_path / "b", spec)
    for name in (a / "name_test.txt").read_text().split():
        assert (a / "image_test" / name).read_bytes() == (b / "image_test" / name).read_bytes()
    ds = build_dataset("synth_veri", tmp_path, **asdict(spec))
    assert ds.num_train_pids == 5 and sorted({it.pid for it in ds.train}) == list(range(5))
    train_ids = {int(n[:4]) for n in (a / "name_train.txt").read_text().split()}
    assert train_ids.isdisjoint({it.pid for it in ds.gallery})
    for q in ds.query:  # every query has a match under another camera
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    assert {it.pid for it in ds.query} == {it.pid for it in ds.gallery}


@pytest.mark.parametrize("name", DATASETS.names())
def test_each_loader_takes_exactly_the_options_its_entry_declares(name):
    entry = DATASETS[name]
    params = inspect.signature(entry.load()).parameters
    generated = {"generate"} if entry.info.get("generated") else set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):  # a generator spec, as keywords: SynthSpec's fields
        assert set(entry.options) == {f.name for f in fields(synth.SynthSpec)}
        assert set(params) == {"root", "spec", *generated}
    else:
        assert set(params) == {"root", *entry.options, *generated}


def test_loader_options_given_directly_are_checked_against_the_entry(tmp_path):
    with pytest.raises(ConfigError, match=r"'data\.veriwild\.test_size' must be one of \[3000, 5000, 10000\]"):
        build_dataset("veriwild", tmp_path, test_size=4000)
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.veri776\.test_size'"):
        build_dataset("veri776", tmp_path, test_size=3000)
