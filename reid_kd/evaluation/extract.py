"""Run a model over query and gallery, then score it."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from reid_kd.evaluation.metrics import evaluate


@torch.no_grad()
def extract_features(model, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Retrieval features (`bn_feat`, L2-normalised), identities and cameras of a loader's images."""
    was_training = model.training
    model.eval()
    feats, pids, camids = [], [], []
    for images, pid, camid, _ in loader:
        out = model(images.to(device, non_blocking=True))
        feats.append(F.normalize(out.bn_feat.float(), dim=1).cpu())
        pids.append(pid)
        camids.append(camid)
    model.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(pids).numpy(), torch.cat(camids).numpy()


def evaluate_model(model, query_loader, gallery_loader, eval_cfg: dict, device: torch.device) -> dict:
    """Metrics of one model in the metrics.json vocabulary (mAP, mINP, rank1/5/10, cmc)."""
    qf, q_pids, q_camids = extract_features(model, query_loader, device)
    gf, g_pids, g_camids = extract_features(model, gallery_loader, device)
    result = evaluate(qf, gf, q_pids, g_pids, q_camids, g_camids, metric=eval_cfg["metric"],
                      max_rank=eval_cfg["max_rank"], query_chunk=eval_cfg["query_chunk"],
                      use_gpu=eval_cfg["faiss_gpu"] == "auto")
    cmc = result["cmc"]
    return {"mAP": result["mAP"], "mINP": result["mINP"], "rank1": float(cmc[0]),
            "rank5": float(cmc[min(4, len(cmc) - 1)]), "rank10": float(cmc[min(9, len(cmc) - 1)]),
            "num_valid_queries": result["num_valid_queries"], "cmc": [float(c) for c in cmc]}
