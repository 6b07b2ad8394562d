"""VehicleID and VeRi-Wild loaders on generated fixtures in their real layouts."""
import pytest

from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import DatasetLayoutError


def vehicleid_fixture(tmp_path, jpeg):
    root = tmp_path / "VehicleID_V1.0"
    train = [("0000001", 7), ("0000002", 7), ("0000003", 31), ("0000004", 12)]
    test = [(f"{100 + i:07d}", pid) for i, pid in enumerate([501] * 4 + [502] * 3 + [503] * 2 + [504])]
    for i, (name, _) in enumerate(train + test):
        jpeg(root / "image" / f"{name}.jpg", i)
    split = root / "train_test_split"
    split.mkdir(parents=True)
    (split / "train_list.txt").write_text("".join(f"{n} {p}\n" for n, p in train))
    (split / "test_list_800.txt").write_text("".join(f"{n} {p}\n" for n, p in test))
    (split / "test_list_1600.txt").write_text("".join(f"{n} {p}\n" for n, p in test[:4]))
    return root


def test_vehicleid_relabels_train_and_has_no_cameras(tmp_path, jpeg):
    root = vehicleid_fixture(tmp_path, jpeg)
    ds = build_dataset("vehicleid", tmp_path)
    assert [it.pid for it in ds.train] == [0, 0, 2, 1]  # 7 -> 0, 12 -> 1, 31 -> 2
    assert ds.train[0].path == str(root / "image" / "0000001.jpg")
    assert not ds.has_cameras and {it.camid for it in ds.query + ds.gallery} == {0}


def test_vehicleid_gallery_is_one_seeded_random_image_per_identity(tmp_path, jpeg):
    vehicleid_fixture(tmp_path, jpeg)
    ds = build_dataset("vehicleid", tmp_path, draws=10, draw_seed=3)
    assert len(ds.draws) == 10 and (ds.query, ds.gallery) == ds.draws[0]
    test_paths = None
    for query, gallery in ds.draws:
        assert sorted(it.pid for it in gallery) == [501, 502, 503, 504]  # one image per identity
        paths = sorted(it.path for it in query + gallery)
        assert test_paths is None or paths == test_paths  # every draw splits the same test images
        test_paths = paths
        assert len(paths) == 10 and not {it.path for it in query} & {it.path for it in gallery}
        assert 504 not in {it.pid for it in query}  # a single-image identity is only in the gallery
    assert len({tuple(it.path for it in g) for _, g in ds.draws}) > 1  # draws differ
    again = build_dataset("vehicleid", tmp_path, draws=10, draw_seed=3)
    assert again.draws == ds.draws  # and are reproducible from the seed
    other = build_dataset("vehicleid", tmp_path, draws=10, draw_seed=4)
    assert other.draws != ds.draws


def test_vehicleid_test_size_picks_the_list(tmp_path, jpeg):
    vehicleid_fixture(tmp_path, jpeg)
    ds = build_dataset("vehicleid", tmp_path, test_size=1600, draws=1)
    assert {it.pid for it in ds.query + ds.gallery} == {501} and len(ds.draws) == 1
    with pytest.raises(DatasetLayoutError, match="test_list_2400.txt"):
        build_dataset("vehicleid", tmp_path, test_size=2400)


def veriwild_fixture(tmp_path, jpeg, with_info=True):
    root = tmp_path / "VERI-Wild"
    entries = {  # key -> camera number in vehicle_info.txt
        "00001/000001": "026", "00001/000002": "101", "00004/000010": "026",
        "03000/100001": "005", "03000/100002": "101", "03001/100010": "005", "03001/100011": "026",
    }
    for i, key in enumerate(entries):
        jpeg(root / "images" / f"{key}.jpg", i)
    split = root / "train_test_split"
    split.mkdir(parents=True)
    (split / "train_list.txt").write_text("00001/000001\n00001/000002\n00004/000010\n")
    (split / "test_3000_query.txt").write_text("03000/100001\n03001/100010\n")
    (split / "test_3000.txt").write_text("03000/100002\n03001/100011\n")
    (split / "test_5000_query.txt").write_text("03000/100001\n")
    (split / "test_5000.txt").write_text("03000/100002\n")
    if with_info:
        lines = ["id/image;Camera ID;Time;Model;Type;Color"]
        lines += [f"{k};{c};2017-04-04 09:32:36;Audi;SUV;white" for k, c in entries.items()]
        (split / "vehicle_info.txt").write_text("\n".join(lines) + "\n")
    return root


def test_veriwild_reads_cameras_from_the_info_file(tmp_path, jpeg):
    root = veriwild_fixture(tmp_path, jpeg)
    ds = build_dataset("veriwild", tmp_path)
    # cameras 005, 026, 101 -> 0, 1, 2 (header line skipped)
    assert [(it.pid, it.camid) for it in ds.train] == [(0, 1), (0, 2), (1, 1)]
    assert [(it.pid, it.camid) for it in ds.query] == [(3000, 0), (3001, 0)]
    assert [(it.pid, it.camid) for it in ds.gallery] == [(3000, 2), (3001, 1)]
    assert ds.query[0].path == str(root / "images" / "03000" / "100001.jpg")
    assert ds.has_cameras and not ds.bad_files


def test_veriwild_test_size_and_missing_info_file(tmp_path, jpeg):
    veriwild_fixture(tmp_path, jpeg, with_info=False)
    with pytest.raises(DatasetLayoutError, match="vehicle_info.txt"):
        build_dataset("veriwild", tmp_path)
    (tmp_path / "VERI-Wild" / "train_test_split" / "vehicle_info.txt").write_text(
        "id/image;Camera ID;Time;Model;Type;Color\n03000/100001;7;t;m;t;c\n03000/100002;9;t;m;t;c\n")
    ds = build_dataset("veriwild", tmp_path, test_size=5000)
    assert [(it.pid, it.camid) for it in ds.query + ds.gallery] == [(3000, 0), (3000, 1)]
    assert len(ds.bad_files) == 3 and "not in vehicle_info.txt" in ds.bad_files[0]  # train images unknown
