"""A FAISS gallery index on disk: build it once from a model file (a checkpoint, or an exported float or INT8
ONNX model that ONNX Runtime runs) and images, load it to search.

An index folder holds `index.faiss` (the FAISS index over the L2-normalised `bn_feat`, inner product =
cosine similarity), `items.csv` (path, identity and camera of each row, in index order), for approximate
factories `features.npy` (the exact features, which recall and re-building need), and `index.json`
(factory, model, input, provenance), written last: its presence marks a complete index.

Identities and cameras of a folder of images are read from names in the VeRi / Market-1501 style
(`0002_c003_...`: id 2, camera 3 -> 0-based 2); other names get -1 (unknown).
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
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
from reid_kd.deploy.onnx_model import OnnxModel, load_deployed
from reid_kd.errors import UserError
from reid_kd.evaluation.extract import extract_features
from reid_kd.models.checkpoint import input_config, weights_digest
from reid_kd.utils.io import read_json, write_bytes

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
NAME_PATTERN = re.compile(r"^(\d+)_c(\d+)")
INDEX_FILE, ITEMS_FILE, FEATURES_FILE, META_FILE = "index.faiss", "items.csv", "features.npy", "index.json"
META_KEYS = ("factory", "count", "dim", "search_params", "checkpoint", "checkpoint_sha256")
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


def image_loader(model, items: list[Item], batch_size: int = 256, workers: int = 0) -> DataLoader:
    """`items` in order, preprocessed as `model` records (its test transform at its input size)."""
    transform = build_transform(input_config(model), train=False)
    return DataLoader(ImageDataset(items, transform), batch_size=batch_size, shuffle=False, num_workers=workers)


def extract(model, items: list[Item], device: torch.device, batch_size: int = 256, workers: int = 0,
            progress: str | None = None) -> np.ndarray:
    """L2-normalised features of `items` by a model on `device`, preprocessed as it records (its test transform)."""
    return extract_features(model, image_loader(model, items, batch_size, workers), device, progress)[0]


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
    """FAISS search parameters in its own syntax, e.g. `nprobe=32` (IVF) or `efSearch=128` (HNSW), refused
    outside their range for this index (FAISS takes efSearch=0 or nprobe=0 and answers with wrong hits)."""
    if not params:
        return
    for item in params.split(","):
        name, _, value = item.strip().partition("=")
        if name not in ("nprobe", "efSearch"):
            continue  # any other FAISS parameter: FAISS checks it below
        try:
            number = int(value)
        except ValueError:
            raise UserError(f"search parameter {item.strip()!r} needs a whole number; give --search-params "
                            f"{name}=N") from None
        ivf = faiss.try_extract_index_ivf(index) if name == "nprobe" else None
        if ivf is not None and not 1 <= number <= ivf.nlist:
            raise UserError(f"search parameter nprobe={value} is outside 1..{ivf.nlist} (the index's IVF lists); "
                            "give --search-params nprobe=N within it")
        if name == "efSearch" and number < 1:
            raise UserError(f"search parameter efSearch={value} is below 1; give --search-params efSearch=N with N "
                            "at least 1 (FAISS widens it to the k searched)")
    try:
        faiss.ParameterSpace().set_index_parameters(index, params)
    except RuntimeError as e:
        raise UserError(f"search parameters {params!r} do not apply to this index ({_faiss_reason(e)}); "
                        "IVF indexes take nprobe=N, HNSW indexes efSearch=N") from None


def build_index(checkpoint: str | Path, items: list[Item], out: str | Path, factory: str = "Flat",
                train_size: int | None = None, search_params: str | None = None, source: dict | None = None,
                device: torch.device | str = "cpu", batch_size: int = 256, workers: int = 0) -> dict:
    """Extract `items`' features with the model of `checkpoint` (a student.pt, or an exported float or INT8
    ONNX model) and write an index folder; returns its metadata.

    Every part is made before anything is written, and written beside an existing index first: a build
    that fails leaves the index there as it was."""
    out, checkpoint = Path(out), Path(checkpoint)
    model = load_deployed(checkpoint, device)
    start = time.perf_counter()
    features = extract(model, items, torch.device(device), batch_size, workers, progress="features")
    extract_seconds = time.perf_counter() - start
    logger.info(f"features: {len(items)} images, {features.shape[1]}-d, {extract_seconds:.1f} s")
    start = time.perf_counter()
    index = new_index(factory, features, train_size)
    set_search_params(index, search_params)
    build_seconds = time.perf_counter() - start
    table = pd.DataFrame({"path": [str(Path(it.path).resolve()) for it in items],  # usable from any folder
                          "pid": [it.pid for it in items], "camid": [it.camid for it in items]})
    parts = {INDEX_FILE: faiss.serialize_index(index).tobytes(), ITEMS_FILE: table.to_csv(index=False).encode()}
    if factory != "Flat":  # a Flat index holds its exact features itself
        buffer = io.BytesIO()
        np.save(buffer, features)
        parts[FEATURES_FILE] = buffer.getvalue()
    meta = {"factory": factory, "metric": "inner product of L2-normalised bn_feat (cosine)", "count": len(items),
            "dim": int(features.shape[1]), "train_size": train_size, "search_params": search_params or "",
            "checkpoint": str(checkpoint.resolve()), "checkpoint_sha256": file_digest(checkpoint),
            # what a student distilled from this model records (an exported model: that of the weights it came from)
            "weights_sha256": model.weights_sha256 if isinstance(model, OnnxModel) else weights_digest(model),
            "backbone": model.backbone_name, "input": model.input, "source": source or {},
            "extract_seconds": round(extract_seconds, 3), "build_seconds": round(build_seconds, 3),
            "faiss": faiss.__version__}
    _write_index_folder(out, parts, json.dumps(meta, indent=2) + "\n")
    return meta


def _write_index_folder(out: Path, parts: dict[str, bytes], meta: str) -> None:
    """Write the parts into a staging folder inside `out`, then move them in, `index.json` last."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=out, prefix=".building-"))
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(out)) from None
    try:
        for name, data in {**parts, META_FILE: meta.encode()}.items():
            write_bytes(data, stage / name)
        (out / META_FILE).unlink(missing_ok=True)  # from here the folder is incomplete until its metadata is back
        for name in parts:
            os.replace(stage / name, out / name)
        if FEATURES_FILE not in parts:
            (out / FEATURES_FILE).unlink(missing_ok=True)
        os.replace(stage / META_FILE, out / META_FILE)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class GalleryIndex:
    folder: Path
    meta: dict
    index: faiss.Index
    items: pd.DataFrame

    @classmethod
    def load(cls, folder: str | Path, search_params: str | None = None) -> GalleryIndex:
        """Open an index folder, its parts checked against each other (a part that does not fit is named)."""
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            raise UserError(f"{folder} is not a complete index (no {META_FILE}); build it with "
                            "`reidkd index build --checkpoint CKPT --images DIR --out FOLDER`")
        meta = read_json(folder / META_FILE)
        missing = [k for k in META_KEYS if k not in meta] if isinstance(meta, dict) else list(META_KEYS)
        if missing or not isinstance(meta["search_params"], str) or not isinstance(meta["dim"], int):
            _damaged(folder / META_FILE, f"no {', '.join(missing)}" if missing else "a value of the wrong type")
        if not (folder / INDEX_FILE).is_file():
            _damaged(folder / INDEX_FILE, "missing or not a regular file")
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as e:
            raise UserError(f"{folder / INDEX_FILE} cannot be read ({_faiss_reason(e)}); rebuild the index with "
                            "`reidkd index build`") from None
        if index.d != meta["dim"] or index.ntotal != meta["count"]:
            _damaged(folder / INDEX_FILE, f"{index.ntotal} {index.d}-d vectors, {META_FILE} records "
                     f"{meta['count']} {meta['dim']}-d")
        set_search_params(index, search_params if search_params is not None else meta["search_params"])
        gallery = cls(folder, meta, index, _read_items(folder / ITEMS_FILE, index.ntotal))
        if meta["factory"] != "Flat":
            gallery.exact_features(mmap=True)  # its shape and type checked now, not mid-evaluation
        return gallery

    def model(self, checkpoint: str | Path | None = None, device: torch.device | str = "cpu"):
        """The model the index was built with (its recorded file, or `checkpoint`), refused if it is another one."""
        path = Path(checkpoint or self.meta["checkpoint"])
        if not path.is_file():
            raise UserError(f"the index {self.folder} was built with {path}, which is not there; pass --checkpoint "
                            "with that file where it moved")
        digest = file_digest(path)
        if digest != self.meta["checkpoint_sha256"]:
            raise UserError(f"{path} is not the model the index {self.folder} was built with (its weights differ: "
                            f"sha256 {digest[:12]} vs {self.meta['checkpoint_sha256'][:12]}); pass the "
                            "index's own checkpoint, or rebuild the index with this one (`reidkd index build`)")
        model = load_deployed(path, device)
        if model.retrieval_dim != self.index.d:
            _damaged(self.folder / INDEX_FILE, f"{self.index.d}-d vectors, its model gives {model.retrieval_dim}-d")
        return model

    def query_encoder(self, checkpoint: str | Path | None = None, query_checkpoint: str | Path | None = None,
                      device: torch.device | str = "cpu"):
        """The model that embeds queries for this index: a student distilled from its model where
        `query_checkpoint` is given (`query_model`), else its own (`model`, found at `checkpoint` if it moved)."""
        return self.query_model(query_checkpoint, device) if query_checkpoint else self.model(checkpoint, device)

    def query_model(self, checkpoint: str | Path, device: torch.device | str = "cpu"):
        """A student that embeds the queries in place of the index's model (asymmetric retrieval: a light
        query encoder searching a gallery a heavy teacher embedded once). Refused unless it was distilled from
        the index's model (its file records that model's `weights_digest`) into the index's width."""
        model = load_deployed(checkpoint, device)  # a student.pt, or its float or INT8 export
        built_with = f"{self.meta.get('backbone', 'its model')}, {Path(self.meta['checkpoint']).name}"
        name = f"the index {self.folder} ({built_with})"
        if model.retrieval_dim != self.index.d:
            raise UserError(f"{checkpoint} gives {model.retrieval_dim}-d features, {name} holds {self.index.d}-d: "
                            f"a query encoder must embed into its width; distill the student with "
                            f"model.embedding_dim={self.index.d} from the index's model")
        own = self.meta.get("weights_sha256")
        if own is None:
            raise UserError(f"{name} records no digest of its model's weights (built by an earlier reid-kd), so no "
                            "student can be checked against it; rebuild it with `reidkd index build`")
        if model.distilled_from != own:
            how = ("records no teacher it was distilled from" if model.distilled_from is None
                   else "was distilled from another model")
            raise UserError(f"{checkpoint} {how}: its features are not in the space of {name}; give a student "
                            "distilled from the index's model, or index the gallery with the student itself")
        return model

    def search(self, queries: np.ndarray, k: int, chunk_elements: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
        """(scores, row ids) of each query's `k` best rows, best first; id -1 where the index found fewer.

        Queries go in chunks of at most `chunk_elements` results, so a deep search stays in bounded memory.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.index.ntotal)
        step = max(1, chunk_elements // max(k, 1))
        parts = [self.index.search(queries[i:i + step], k) for i in range(0, len(queries), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def exact_features(self, mmap: bool = False) -> np.ndarray:
        """The gallery's exact features: the Flat index's own vectors, else those stored beside the index."""
        if self.meta["factory"] == "Flat":
            return self.index.reconstruct_n(0, self.index.ntotal)
        path = self.folder / FEATURES_FILE
        if not path.is_file():
            _damaged(path, "missing or not a regular file")
        try:
            features = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            _damaged(path, f"not a NumPy array file ({str(e)[:80]})")
        if features.dtype != np.float32 or features.shape != (self.index.ntotal, self.index.d):
            _damaged(path, f"{features.dtype} {features.shape}, the index holds float32 "
                     f"({self.index.ntotal}, {self.index.d})")
        return features


def _damaged(path: Path, why: str) -> None:
    raise UserError(f"{path} does not fit its index folder ({why}); rebuild the index with `reidkd index build`")


def _read_items(path: Path, count: int) -> pd.DataFrame:
    """items.csv: a path, an integer identity and camera per index row."""
    if not path.is_file():
        _damaged(path, "missing or not a regular file")
    try:
        items = pd.read_csv(path, dtype={"path": str})
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        _damaged(path, f"not a table ({str(e).splitlines()[0][:80]})")
    if list(items.columns) != ["path", "pid", "camid"]:
        _damaged(path, f"columns {', '.join(map(str, items.columns))}, not path, pid, camid")
    if not all(pd.api.types.is_integer_dtype(items[c]) for c in ("pid", "camid")):
        _damaged(path, "pid and camid must be whole numbers")
    if len(items) != count:
        _damaged(path, f"{len(items)} rows for {count} indexed images")
    return items
