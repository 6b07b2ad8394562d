"""DukeMTMC-reID, MSMT17, CUHK03 and the synthetic persons on fixtures in their real layouts."""
from dataclasses import asdict

import numpy as np
import pytest
from scipy.io import savemat

from reid_kd.data import synth, synth_person
from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import DatasetLayoutError


def test_dukemtmc_parses_names_and_relabels(tmp_path, jpeg):
    root = tmp_path / "DukeMTMC-reID"
    files = {
        "bounding_box_train": ["0005_c2_f0046182.jpg", "0005_c5_f0051341.jpg", "0001_c8_f0000001.jpg"],
        "query": ["0019_c1_f0057841.jpg"],
        "bounding_box_test": ["0019_c3_f0061234.jpg", "7140_c7_f0101010.jpg", "0019_c1s1_001_01.jpg"],
    }
    for folder, names in files.items():
        for i, n in enumerate(names):
            jpeg(root / folder / n, i)
    ds = build_dataset("dukemtmcreid", tmp_path)
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 7), (1, 1), (1, 4)]  # sorted by file name
    assert [(it.pid, it.camid) for it in ds.query] == [(19, 0)]
    assert [(it.pid, it.camid) for it in ds.gallery] == [(19, 2), (7140, 6)]
    assert ds.bad_files == [str(root / "bounding_box_test" / "0019_c1s1_001_01.jpg")]  # Market name: not Duke


def msmt_fixture(tmp_path, jpeg, folder, train_dir, test_dir):
    root = tmp_path / folder
    lists = {
        "list_train.txt": [("0000/0000_000_01_0303morning_0015_0.jpg", 0), ("0000/0000_001_05_0303noon_0020_1.jpg", 0)],
        "list_val.txt": [("0007/0007_010_12_0303afternoon_0100_0.jpg", 7)],
        "list_query.txt": [("0002/0002_004_15_0113morning_0900_0.jpg", 2)],
        "list_gallery.txt": [("0002/0002_010_03_0113noon_0001_1.jpg", 2), ("0003/0003_000_07_0113noon_0002_0.jpg", 3)],
    }
    for listing, rows in lists.items():
        sub = train_dir if listing in ("list_train.txt", "list_val.txt") else test_dir
        for i, (rel, _) in enumerate(rows):
            jpeg(root / sub / rel, i)
        (root / listing).write_text("".join(f"{rel} {pid}\n" for rel, pid in rows))
    jpeg(root / test_dir / "0003" / "0003_unlisted.jpg")  # only listed files count
    return root


@pytest.mark.parametrize("version,folder,train_dir,test_dir", [
    ("v1", "MSMT17_V1", "train", "test"), ("v2", "MSMT17_V2", "mask_train_v2", "mask_test_v2")])
def test_msmt17_reads_list_files_of_each_version(tmp_path, jpeg, version, folder, train_dir, test_dir):
    root = msmt_fixture(tmp_path, jpeg, folder, train_dir, test_dir)
    for asked in (version, "auto"):
        ds = build_dataset("msmt17", tmp_path, version=asked)
        assert ds.notes["version"] == version
        assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (0, 4), (1, 11)]  # train + val, 7 -> 1
        assert [(it.pid, it.camid) for it in ds.query] == [(2, 14)]
        assert [(it.pid, it.camid) for it in ds.gallery] == [(2, 2), (3, 6)]
        assert ds.train[2].path == str(root / train_dir / "0007" / "0007_010_12_0303afternoon_0100_0.jpg")
    other = "v2" if version == "v1" else "v1"
    with pytest.raises(DatasetLayoutError, match=VERSIONS_DIR[other]):
        build_dataset("msmt17", tmp_path, version=other)


VERSIONS_DIR = {"v1": "train/", "v2": "mask_train_v2/"}


def test_msmt17_missing_list_file_is_named(tmp_path, jpeg):
    root = msmt_fixture(tmp_path, jpeg, "MSMT17_V1", "train", "test")
    (root / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list_val.txt"):
        build_dataset("msmt17", tmp_path)


def cuhk03_fixture(tmp_path, jpeg):
    root = tmp_path / "cuhk03"
    names = ["1_001_1_01.png", "1_001_2_06.png", "2_010_1_01.png", "3_020_1_02.png", "3_020_2_07.png",
             "3_020_2_08.png", "4_030_1_01.png", "4_030_2_06.png"]
    labels = [1, 1, 10, 20, 20, 20, 30, 30]
    for variant in ("labeled", "detected"):
        for i, n in enumerate(names):
            jpeg(root / f"images_{variant}" / n, i)
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = n
    common = {"filelist": filelist, "labels": np.array(labels, np.float64)[:, None]}
    savemat(root / "cuhk03_new_protocol_config_labeled.mat", {
        **common, "train_idx": np.array([[1], [2], [3]]), "query_idx": np.array([[4], [7]]),
        "gallery_idx": np.array([[5], [6], [8]])})
    savemat(root / "cuhk03_new_protocol_config_detected.mat", {
        **common, "train_idx": np.array([[1], [3]]), "query_idx": np.array([[5]]),
        "gallery_idx": np.array([[4], [6]])})
    return root


def test_cuhk03_new_protocol_labeled_and_detected_splits(tmp_path, jpeg):
    root = cuhk03_fixture(tmp_path, jpeg)
    ds = build_dataset("cuhk03", tmp_path)  # labeled by default
    assert ds.notes["variant"] == "labeled"
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 0), (0, 1), (1, 0)]  # 1 -> 0, 10 -> 1; view -> cam
    assert [(it.pid, it.camid) for it in ds.query] == [(20, 0), (30, 0)]
    assert [(it.pid, it.camid) for it in ds.gallery] == [(20, 1), (20, 1), (30, 1)]
    assert ds.query[0].path == str(root / "images_labeled" / "3_020_1_02.png")
    det = build_dataset("cuhk03", tmp_path, variant="detected")
    assert [it.pid for it in det.train] == [0, 1] and [(it.pid, it.camid) for it in det.query] == [(20, 1)]
    assert det.gallery[0].path == str(root / "images_detected" / "3_020_1_02.png")
    (root / "cuhk03_new_protocol_config_detected.mat").unlink()
    with pytest.raises(DatasetLayoutError, match="cuhk03_new_protocol_config_detected.mat"):
        build_dataset("cuhk03", tmp_path, variant="detected")


def test_synthetic_persons_are_read_by_the_market_loader_and_are_deterministic(tmp_path):
    spec = synth.SynthSpec(train_ids=5, test_ids=4, cameras=4, images_per_id=4, image_size=32, seed=3)
    a = synth_person.generate(tmp_path / "a", spec)
    b = synth_person.generate(tmp_path / "b", spec)
    names = sorted(p.name for p in (a / "bounding_box_test").iterdir())
    assert names and all((a / "bounding_box_test" / n).read_bytes() == (b / "bounding_box_test" / n).read_bytes()
                         for n in names)
    ds = build_dataset("synth_market", tmp_path, **asdict(spec))
    assert not ds.bad_files and ds.num_train_pids == 5
    assert len(ds.train) == 20 and len(ds.gallery) == 16
    for q in ds.query:
        assert any(g.pid == q.pid and g.camid != q.camid for g in ds.gallery)
    image = synth_person.render_person(synth_person.person_identity(0, 1), synth._camera(0, 0),
                                       synth.seeded_rng(0), 64)
    assert image.shape == (64, 32, 3)  # Market's 2:1 aspect
    with pytest.raises(ValueError, match="at most 9"):
        synth_person.generate(tmp_path / "c", synth.SynthSpec(cameras=10))
