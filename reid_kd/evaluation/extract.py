"""Run a model over query and gallery, then score it: symmetric retrieval (its queries in its own gallery), or
asymmetric (its queries in a frozen teacher's gallery, `Features` of the teacher)."""
from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from reid_kd.evaluation.metrics import evaluate
from reid_kd.utils import distributed


@torch.no_grad()
def extract_features(model, loader, device: torch.device, progress: str | None = None, timing: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Retrieval features (`bn_feat`, L2-normalised), identities and cameras of a loader's images.

    `progress` names a progress bar over the batches (shown on a terminal). `timing` (a dict) gets the
    seconds the forward passes took and the images they embedded: the model's inference speed, measured
    on the pass evaluation makes anyway (image decoding not counted).
    """
    was_training = model.training
    model.eval()
    total = len(loader.dataset)
    if distributed.active():  # rank r embeds items r, r + N, ...; the rows are gathered back in order
        loader = DataLoader(Subset(loader.dataset, range(distributed.rank(), total, distributed.world_size())),
                            batch_size=loader.batch_size, num_workers=loader.num_workers)
    feats, pids, camids = [], [], []
    batches = tqdm(loader, desc=progress, unit="batch", leave=False, disable=None) if progress else loader
    for images, pid, camid, _ in batches:
        images = images.to(device, non_blocking=True)
        start = _synced_clock(device) if timing is not None else 0.0
        out = model(images)
        if timing is not None:
            timing["seconds"] = timing.get("seconds", 0.0) + _synced_clock(device) - start
            timing["images"] = timing.get("images", 0) + len(images)
        feats.append(F.normalize(out.bn_feat.float(), dim=1))
        pids.append(pid.to(device))
        camids.append(camid.to(device))
    model.train(was_training)
    in_order = (distributed.gather_in_order(torch.cat(x), total).cpu().numpy() for x in (feats, pids, camids))
    return tuple(in_order)


def _synced_clock(device: torch.device | str) -> float:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


PROTOCOLS = {"symmetric": "student", "asymmetric": "teacher"}  # protocol -> the network that embeds the gallery


class Features:
    """A network's features (`extract_features`) of each loader it is asked for, extracted on first use and
    kept: the frozen teacher's gallery is embedded once for every student of a cohort that needs it."""

    def __init__(self, model, device: torch.device):
        self.model, self.device, self.done = model, device, {}

    def __call__(self, loader, timing: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if loader not in self.done:
            self.done[loader] = extract_features(self.model, loader, self.device, timing=timing)
        return self.done[loader]


def evaluate_model(model, query_loader, gallery_loader, eval_cfg: dict, device: torch.device,
                   protocols: list[str] | None = None, teacher: Features | None = None) -> dict:
    """Metrics of one model in the metrics.json vocabulary (mAP, mINP, rank1/5/10, cmc), and its inference
    images/s over the gallery (timed as it is embedded, after the query pass has warmed the model up).

    `protocols` (`eval.protocols`): each is scored, the first one's metrics at the top level, every one's
    under `protocols[name]` with the networks that embedded queries and gallery; `asymmetric` searches
    the model's queries in `teacher`'s gallery (after the first, only where their widths match: else its
    record says why it was `skipped`). None: symmetric alone, with no `protocols` table (a
    network's own ceiling: a teacher, a pretrained backbone).
    The loaders' `source` (the ReIDDataset, set by `build_loaders`) says whether the dataset has
    cameras and whether it asks for the mean over several (query, gallery) draws; features are then
    extracted once for all test images and each draw is scored from them.
    """
    if teacher is None and "asymmetric" in (protocols or ()):
        raise ValueError("the asymmetric protocol searches the teacher's gallery; pass the teacher's Features")
    source = getattr(query_loader.dataset, "source", None)
    student, timing = Features(model, device), {}
    student(query_loader)
    student(gallery_loader, timing)
    speed = {"inference_images_per_sec": timing.get("images", 0) / max(timing.get("seconds", 0.0), 1e-9)}
    options = dict(metric=eval_cfg["metric"], max_rank=eval_cfg["max_rank"], query_chunk=eval_cfg["query_chunk"],
                   use_gpu=eval_cfg["faiss_gpu"] == "auto", device=device, rerank=rerank_options(eval_cfg),
                   same_camera_is_junk=source.has_cameras if source is not None else True)
    if protocols is None:
        return _score(student, student, query_loader, gallery_loader, options) | speed
    table = {}
    for name in protocols:
        gallery = teacher if PROTOCOLS[name] == "teacher" else student
        networks = {"query": "student", "gallery": PROTOCOLS[name]}
        why = _incomparable(student, gallery)
        if why and name == protocols[0]:
            raise ValueError(f"the {name} protocol cannot score this student: {why}")
        table[name] = networks | ({"skipped": why} if why else
                                  _score(student, gallery, query_loader, gallery_loader, options))
    headline = {k: v for k, v in table[protocols[0]].items() if k not in ("query", "gallery")}
    return headline | speed | {"protocols": table}


def _incomparable(queries: Features, gallery: Features) -> str | None:
    """Why one network's query features cannot be searched among another's gallery features (their widths
    differ), else None. A protocol after the first is then recorded as skipped, with this reason: the
    headline's is refused before training (`check_asymmetric`)."""
    widths = [getattr(f.model, "retrieval_dim", None) for f in (queries, gallery)]
    if queries is gallery or None in widths or widths[0] == widths[1]:
        return None
    return f"the student's retrieval features are {widths[0]}-d, the teacher's {widths[1]}-d (no shared head)"


def _score(queries: Features, gallery: Features, query_loader, gallery_loader, options: dict) -> dict:
    """`queries`' features of the query images searched in `gallery`'s of the gallery images (of each draw,
    averaged, where the dataset has several: a draw's query and gallery may take from both loaders)."""
    source = getattr(query_loader.dataset, "source", None)
    if source is None or not source.draws:
        qf, q_pids, q_camids = queries(query_loader)
        gf, g_pids, g_camids = gallery(gallery_loader)
        return _record([evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, **options)], options["rerank"])
    items = list(query_loader.dataset.items) + list(gallery_loader.dataset.items)
    row = {it.path: i for i, it in enumerate(items)}
    q_feats, g_feats = (np.concatenate([f(query_loader)[0], f(gallery_loader)[0]]) for f in (queries, gallery))
    results = []
    for query, gallery_items in source.draws:
        qi = np.array([row[it.path] for it in query])
        gi = np.array([row[it.path] for it in gallery_items])
        results.append(evaluate(q_feats[qi], g_feats[gi], [it.pid for it in query], [it.pid for it in gallery_items],
                                [it.camid for it in query], [it.camid for it in gallery_items], **options))
    return _record(results, options["rerank"])


def rerank_options(eval_cfg: dict) -> dict | None:
    """`evaluate`'s re-ranking options from the `eval` config block (None: re-ranking off)."""
    if not eval_cfg["rerank"]:
        return None
    return {"k1": eval_cfg["rerank_k1"], "k2": eval_cfg["rerank_k2"], "lam": eval_cfg["rerank_lambda"]}


def _record(results: list[dict], rerank: dict | None) -> dict:
    """One result, or the mean over several draws (with `num_draws`).

    Rank-5 and Rank-10 are read from the CMC, never padded: `eval.max_rank` is at least 10.
    """
    cmc = np.mean([r["cmc"] for r in results], 0)
    if len(cmc) < 10:
        raise ValueError(f"the CMC has {len(cmc)} ranks; Rank-10 needs eval.max_rank >= 10")
    out = {"mAP": float(np.mean([r["mAP"] for r in results])), "mINP": float(np.mean([r["mINP"] for r in results])),
           "rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]),
           "num_valid_queries": int(round(np.mean([r["num_valid_queries"] for r in results]))),
           "num_queries": int(round(np.mean([r["num_queries"] for r in results]))),
           "cmc": [float(c) for c in cmc]}
    if len(results) > 1:
        out["num_draws"] = len(results)
    if rerank:
        out["rerank"] = rerank
    return out
