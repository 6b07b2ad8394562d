"""Custom CSV and folder datasets, several training datasets at once, camera-less evaluation."""
import numpy as np
import pytest
import torch

from reid_kd.data.datasets import build_dataset
from reid_kd.data.datasets.base import DatasetLayoutError, Item, ReIDDataset, combine_train
from reid_kd.data.image_dataset import build_loaders, load_dataset
from reid_kd.engine.configs import load_config
from reid_kd.evaluation import evaluate, evaluate_model


def write_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,id,camera,split\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_custom_csv_with_string_ids_and_cameras(tmp_path, jpeg):
    rows = [("img/a.jpg", "bob", "north", "train"), ("img/b.jpg", "bob", "south", "train"),
            ("img/c.jpg", "al", "north", "train"), ("img/d.jpg", "cy", "south", "query"),
            ("img/e.jpg", "cy", "north", "gallery"), ("img/f.jpg", "dee", "east", "gallery"),
            ("img/g.jpg", "dee", "east", "validation")]
    for i, r in enumerate(rows):
        jpeg(tmp_path / "mine" / r[0], i)
    write_csv(tmp_path / "mine" / "list.csv", rows)
    ds = build_dataset("custom_csv", tmp_path, path="mine/list.csv")  # relative to the data root
    # ids al, bob, cy, dee -> 0..3; cameras east, north, south -> 0..2; train relabelled
    assert [(it.pid, it.camid) for it in ds.train] == [(1, 1), (1, 2), (0, 1)]
    assert [(it.pid, it.camid) for it in ds.query] == [(2, 2)]
    assert [(it.pid, it.camid) for it in ds.gallery] == [(2, 1), (3, 0)]
    assert ds.has_cameras and ds.train[0].path == str(tmp_path / "mine" / "img" / "a.jpg")
    assert len(ds.bad_files) == 1 and "validation" in ds.bad_files[0]


def test_custom_csv_without_cameras_keeps_numeric_ids(tmp_path, jpeg):
    write_csv(tmp_path / "l.csv", [("a.jpg", 12, "", "train"), ("b.jpg", 40, "", "query"),
                                   ("c.jpg", 40, "", "gallery")])
    ds = build_dataset("custom_csv", tmp_path, path=str(tmp_path / "l.csv"))
    assert not ds.has_cameras and ds.query[0].pid == 40 and ds.train[0].pid == 0
    write_csv(tmp_path / "mixed.csv", [("a.jpg", 1, 2, "train"), ("b.jpg", 1, "", "query")])
    with pytest.raises(DatasetLayoutError, match="camera column"):
        build_dataset("custom_csv", tmp_path, path="mixed.csv")
    (tmp_path / "bad.csv").write_text("file,label\na.jpg,1\n")
    with pytest.raises(DatasetLayoutError, match="lacks the column"):
        build_dataset("custom_csv", tmp_path, path="bad.csv")
    with pytest.raises(DatasetLayoutError, match=r"data\.custom_csv\.path=PATH"):
        build_dataset("custom_csv", tmp_path)


def test_custom_folder_per_identity(tmp_path, jpeg):
    root = tmp_path / "shop"
    for i, rel in enumerate(["train/anna/1.jpg", "train/anna/2.png", "train/ben/1.jpg", "query/cat/1.jpg",
                             "gallery/cat/2.jpg", "gallery/dan/1.jpeg"]):
        jpeg(root / rel, i)
    (root / "gallery" / "dan" / "notes.txt").write_text("not an image")
    ds = build_dataset("custom_folder", tmp_path, path="shop")
    assert [it.pid for it in ds.train] == [0, 0, 1] and not ds.has_cameras
    assert [it.pid for it in ds.query] == [2] and [it.pid for it in ds.gallery] == [2, 3]
    assert ds.bad_files == [str(root / "gallery" / "dan" / "notes.txt")]


def test_training_on_several_datasets_keeps_identities_apart(tmp_path, jpeg):
    for i, n in enumerate(["0001_c1_f0000001.jpg", "0002_c2_f0000002.jpg"]):
        jpeg(tmp_path / "DukeMTMC-reID" / "bounding_box_train" / n, i)
    for folder in ("query", "bounding_box_test"):
        jpeg(tmp_path / "DukeMTMC-reID" / folder / "0009_c1_f0000003.jpg")
    for i, n in enumerate(["0001_c1s1_000001_01.jpg", "0003_c6s1_000002_01.jpg"]):
        jpeg(tmp_path / "Market-1501-v15.09.15" / "bounding_box_train" / n, i)
    for folder in ("query", "bounding_box_test"):
        jpeg(tmp_path / "Market-1501-v15.09.15" / folder / "0005_c2s1_000003_01.jpg")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.dataset=market1501",
                             "data.train_datasets=[dukemtmcreid]"])
    ds = load_dataset(cfg["data"])
    assert ds.name == "market1501+dukemtmcreid" and ds.num_train_pids == 4  # id 1 of each stays apart
    by_path = {it.path.split("/")[-1]: (it.pid, it.camid) for it in ds.train}
    assert by_path["0001_c1_f0000001.jpg"] != by_path["0001_c1s1_000001_01.jpg"]
    assert sorted(p for p, _ in by_path.values()) == [0, 1, 2, 3]
    assert len({c for _, c in by_path.values()}) == 4  # camera ids offset per dataset
    assert [it.pid for it in ds.query] == [5]  # evaluation stays on data.dataset


def test_combine_train_prefixes_before_relabelling():
    a = ReIDDataset("a", [Item("a1", 0, 0), Item("a2", 1, 1)], [], [])
    b = ReIDDataset("b", [Item("b1", 0, 0)], [], [])
    assert combine_train([a, b]) == [Item("a1", 0, 0), Item("a2", 1, 1), Item("b1", 2, 2)]


def test_evaluation_without_cameras_keeps_same_camera_positives():
    qf = np.array([[1.0, 0.0]], np.float32)
    gf = np.array([[0.9, 0.1], [0.0, 1.0]], np.float32)
    with pytest.raises(ValueError):  # every camera id is 0: the camera rule removes the only positive
        evaluate(qf, gf, [1], [1, 2], [0], [0, 0])
    res = evaluate(qf, gf, [1], [1, 2], [0], [0, 0], same_camera_is_junk=False)
    assert res["mAP"] == 1.0 and res["num_valid_queries"] == 1


class Constant(torch.nn.Module):
    """A 'model' whose feature of an image is the image's mean colour, so features are predictable."""

    class Out:
        def __init__(self, x):
            self.bn_feat = x

    def forward(self, images):
        return self.Out(images.float().mean((2, 3)))


def test_evaluate_model_averages_vehicleid_draws_and_ignores_cameras(tmp_path, jpeg):
    import cv2

    root = tmp_path / "VehicleID_V1.0"
    split = root / "train_test_split"
    split.mkdir(parents=True)
    colours = {1: (255, 0, 0), 2: (240, 0, 0), 3: (0, 0, 255)}  # 1 and 2 close: draws score differently
    test = []
    for pid, colour in colours.items():
        for k in range(3):
            name = f"{pid * 10 + k:07d}"
            img = np.zeros((8, 8, 3), np.uint8)
            img[:] = colour
            img[:4, :4] = (k * 60, 0, k * 60)
            (root / "image").mkdir(exist_ok=True)
            cv2.imwrite(str(root / "image" / f"{name}.jpg"), img)
            test.append(f"{name} {pid}\n")
    (split / "train_list.txt").write_text("".join(test))
    (split / "test_list_800.txt").write_text("".join(test))
    cfg = load_config(None, [f"data.root={tmp_path}", "data.dataset=vehicleid", "data.height=16", "data.width=16",
                             "data.vehicleid.draws=4", "eval.faiss_gpu=never", "data.batch_p=2",
                             "data.batch_k=2"])
    loaders = build_loaders(cfg["data"], 0)
    assert len(loaders.query.dataset.items) + len(loaders.gallery.dataset.items) == 9
    metrics = evaluate_model(Constant(), loaders.query, loaders.gallery, cfg["eval"], torch.device("cpu"))
    assert metrics["num_draws"] == 4 and metrics["num_valid_queries"] == 6  # every query counts (all cams 0)
    per_draw = []
    for query, gallery in loaders.dataset.draws:  # the same, draw by draw, from freshly extracted features
        q = build_loaders(cfg["data"], 0, ReIDDataset("d", loaders.dataset.train, query, gallery, has_cameras=False))
        per_draw.append(evaluate_model(Constant(), q.query, q.gallery, cfg["eval"], torch.device("cpu")))
    assert metrics["mAP"] == pytest.approx(np.mean([m["mAP"] for m in per_draw]))
    assert metrics["rank1"] == pytest.approx(np.mean([m["rank1"] for m in per_draw]))
    assert len({round(m["mAP"], 6) for m in per_draw}) > 1  # the draws do differ
