"""Run a model over query and gallery, then score it."""
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


def evaluate_model(model, query_loader, gallery_loader, eval_cfg: dict, device: torch.device) -> dict:
    """Metrics of one model in the metrics.json vocabulary (mAP, mINP, rank1/5/10, cmc), and its inference
    images/s over the gallery (timed as it is embedded, after the query pass has warmed the model up).

    The loaders' `source` (the ReIDDataset, set by `build_loaders`) says whether the dataset has
    cameras and whether it asks for the mean over several (query, gallery) draws; features are then
    extracted once for all test images and each draw is scored from them.
    """
    source = getattr(query_loader.dataset, "source", None)
    qf, q_pids, q_camids = extract_features(model, query_loader, device)
    timing: dict = {}
    gf, g_pids, g_camids = extract_features(model, gallery_loader, device, timing=timing)
    speed = {"inference_images_per_sec": timing.get("images", 0) / max(timing.get("seconds", 0.0), 1e-9)}
    options = dict(metric=eval_cfg["metric"], max_rank=eval_cfg["max_rank"], query_chunk=eval_cfg["query_chunk"],
                   use_gpu=eval_cfg["faiss_gpu"] == "auto", device=device, rerank=rerank_options(eval_cfg),
                   same_camera_is_junk=source.has_cameras if source is not None else True)
    if source is None or not source.draws:
        return _record([evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, **options)], options["rerank"]) | speed
    items = list(query_loader.dataset.items) + list(gallery_loader.dataset.items)
    row = {it.path: i for i, it in enumerate(items)}
    feats = np.concatenate([qf, gf])
    results = []
    for query, gallery in source.draws:
        qi = np.array([row[it.path] for it in query])
        gi = np.array([row[it.path] for it in gallery])
        results.append(evaluate(feats[qi], feats[gi], [it.pid for it in query], [it.pid for it in gallery],
                                [it.camid for it in query], [it.camid for it in gallery], **options))
    return _record(results, options["rerank"]) | speed


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
