"""A FAISS gallery index on disk: build it once from a checkpoint and images, load it to search.

An index folder holds `index.faiss` (the FAISS index over the L2-normalised `bn_feat`, inner product =
cosine similarity), `items.csv` (path, identity and camera of each row, in index order), for approximate
factories `features.npy` (the exact features, which recall and re-building need), and `index.json`
(factory, model, input, provenance), written last: its presence marks a complete index.

Identities and cameras of a folder of images are read from names in the VeRi / Market-1501 style
(`0002_c003_...`: id 2, camera 3 -> 0-based 2); other names get -1 (unknown).
"""
from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from reid_kd.data.datasets.base import Item
from reid_kd.data.image_dataset import ImageDataset, load_dataset
from reid_kd.data.transforms import build_transform
from reid_kd.deploy.model import file_digest, load_checkpoint
from reid_kd.errors import UserError
from reid_kd.evaluation.extract import extract_features
from reid_kd.utils.io import read_json, write_bytes, write_json, write_text

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAME_PATTERN = re.compile(r"^(\d+)_c(\d+)")
INDEX_FILE, ITEMS_FILE, FEATURES_FILE, META_FILE = "index.faiss", "items.csv", "features.npy", "index.json"
SPLITS = ("gallery", "query", "train")
logger = logging.getLogger(__name__)


def parse_name(path: str | Path) -> tuple[int, int]:
    """(identity, 0-based camera) from a VeRi / Market-style file name, (-1, -1) when it carries none."""
    m = NAME_PATTERN.match(Path(path).name)
    return (int(m.group(1)), int(m.group(2)) - 1) if m else (-1, -1)


def items_from_images(paths: list[str | Path]) -> list[Item]:
    """Image files and folders (searched recursively), as items labelled from their names."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"image not found: {p}")
    if not files:
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return [Item(str(f), *parse_name(f)) for f in files]


def items_from_config(cfg: dict, split: str) -> tuple[list[Item], bool]:
    """A config's split (`gallery`, `query` or `train`) and whether its dataset records cameras."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    dataset = load_dataset(cfg["data"])
    if dataset.draws and split != "train":
        raise UserError(f"{dataset.name} is scored over {len(dataset.draws)} gallery draws; an index holds one "
                        "gallery: index its images with --images, or evaluate with `reidkd eval`")
    return list(getattr(dataset, split)), dataset.has_cameras


def extract(model, items: list[Item], device: torch.device, batch_size: int = 256, workers: int = 0,
            progress: str | None = None) -> np.ndarray:
    """L2-normalised features of `items` by a model on `device`, preprocessed as it records (its test transform)."""
    transform = build_transform({"height": model.input["height"], "width": model.input["width"]}, train=False)
    loader = DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=workers)
    return extract_features(model, loader, device, progress)[0]


def new_index(factory: str, features: np.ndarray, train_size: int | None, seed: int = 0) -> faiss.Index:
    """A FAISS index of `factory` over `features` (inner product), trained on a seeded sample when it must be."""
    dim = features.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as e:
        raise UserError(f"--factory {factory!r} is not a FAISS index for {dim}-d features "
                        f"({_faiss_reason(e)}); e.g. Flat, IVF1024,Flat, IVF4096,PQ64, HNSW32") from None
    if not index.is_trained:
        n = len(features) if train_size is None else min(train_size, len(features))
        sample = features[np.random.default_rng(seed).choice(len(features), n, replace=False)] if n < len(features) \
            else features
        try:
            index.train(sample)
        except RuntimeError as e:
            raise UserError(f"cannot train {factory} on {n} vectors ({_faiss_reason(e)}); index more images, raise "
                            "--train-size, or use fewer IVF lists / PQ centroids") from None
    index.add(features)
    return index


def _faiss_reason(e: RuntimeError) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln.split("failed: ", 1)[-1] for ln in lines if "failed" in ln or "Error" in ln), lines[-1] if lines
                else "FAISS refused it")[:160]


def set_search_params(index: faiss.Index, params: str | None) -> None:
    """FAISS search parameters in its own syntax, e.g. `nprobe=32` (IVF) or `efSearch=128` (HNSW)."""
    if not params:
        return
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise UserError(f"search parameters {params!r} do not apply to this index ({_faiss_reason(e)}); "
                        "IVF indexes take nprobe=N, HNSW indexes efSearch=N") from None


def build_index(checkpoint: str | Path, items: list[Item], out: str | Path, factory: str = "Flat",
                train_size: int | None = None, search_params: str | None = None, source: dict | None = None,
                device: torch.device | str = "cpu", batch_size: int = 256, workers: int = 0) -> dict:
    """Extract `items`' features with the checkpoint's model and write an index folder; returns its metadata."""
    out, checkpoint = Path(out), Path(checkpoint)
    (out / META_FILE).unlink(missing_ok=True)  # an index being rebuilt is incomplete until its metadata is back
    model = load_checkpoint(checkpoint, device)
    start = time.perf_counter()
    features = extract(model, items, torch.device(device), batch_size, workers, progress="features")
    extract_seconds = time.perf_counter() - start
    logger.info(f"features: {len(items)} images, {features.shape[1]}-d, {extract_seconds:.1f} s")
    start = time.perf_counter()
    index = new_index(factory, features, train_size)
    set_search_params(index, search_params)
    build_seconds = time.perf_counter() - start
    write_bytes(faiss.serialize_index(index).tobytes(), out / INDEX_FILE)
    table = pd.DataFrame({"path": [str(Path(it.path).resolve()) for it in items],  # usable from any folder
                          "pid": [it.pid for it in items], "camid": [it.camid for it in items]})
    write_text(table.to_csv(index=False), out / ITEMS_FILE)
    if factory != "Flat":
        buffer = io.BytesIO()
        np.save(buffer, features)
        write_bytes(buffer.getvalue(), out / FEATURES_FILE)
    else:
        (out / FEATURES_FILE).unlink(missing_ok=True)  # a Flat index holds its exact features itself
    meta = {"factory": factory, "metric": "inner product of L2-normalised bn_feat (cosine)", "count": len(items),
            "dim": int(features.shape[1]), "train_size": train_size, "search_params": search_params or "",
            "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_digest(checkpoint),
            "backbone": model.backbone_name, "input": model.input, "source": source or {},
            "extract_seconds": round(extract_seconds, 3), "build_seconds": round(build_seconds, 3),
            "faiss": faiss.__version__}
    write_json(meta, out / META_FILE)
    return meta


@dataclass
class GalleryIndex:
    folder: Path
    meta: dict
    index: faiss.Index
    items: pd.DataFrame

    @classmethod
    def load(cls, folder: str | Path, search_params: str | None = None) -> "GalleryIndex":
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise UserError(f"{folder} is not a complete index (no {META_FILE}); build it with "
                            "`reidkd index build --checkpoint CKPT --images DIR --out FOLDER`")
        meta = read_json(folder / META_FILE)
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as e:
            raise UserError(f"{folder / INDEX_FILE} cannot be read ({_faiss_reason(e)}); rebuild the index with "
                            "`reidkd index build`") from None
        set_search_params(index, search_params if search_params is not None else meta["search_params"])
        return cls(folder, meta, index, pd.read_csv(folder / ITEMS_FILE))

    def model(self, checkpoint: str | Path | None = None, device: torch.device | str = "cpu"):
        """The model the index was built with (its recorded file, or `checkpoint`), refused if it is another one."""
        path = Path(checkpoint or self.meta["checkpoint"])
        if not path.is_file():
            raise UserError(f"the index {self.folder} was built with {path}, which is not there; pass --checkpoint "
                            "with that student.pt")
        digest = file_digest(path)
        if digest != self.meta["checkpoint_sha256"]:
            raise UserError(f"{path} is not the model the index {self.folder} was built with (its weights differ: "
                            f"sha256 {digest[:12]} vs {self.meta['checkpoint_sha256'][:12]}); pass the "
                            "index's own checkpoint, or rebuild the index with this one (`reidkd index build`)")
        return load_checkpoint(path, device)

    def search(self, queries: np.ndarray, k: int, chunk_elements: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of each query's `k` best rows, best first; id -1 where the index found fewer.

        Queries go in chunks of at most `chunk_elements` results, so a deep search stays in bounded memory.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.index.ntotal)
        step = max(1, chunk_elements // max(k, 1))
        parts = [self.index.search(queries[i:i + step], k) for i in range(0, len(queries), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def exact_features(self) -> np.ndarray:
        """The gallery's exact features: the Flat index's own vectors, else those stored beside the index."""
        if self.meta["factory"] == "Flat":
            return self.index.reconstruct_n(0, self.index.ntotal)
        return np.load(self.folder / FEATURES_FILE)
